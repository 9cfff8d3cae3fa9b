"""A/B tests between live variants: statistics (pure) and the collection that feeds them."""
