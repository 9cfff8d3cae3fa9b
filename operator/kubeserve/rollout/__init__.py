"""Progressive delivery: walk the live split to the spec's weights in gated steps (pure logic).

`steps` plans the live split at each step, `gates` judges the candidate against the baseline,
`decide` is the state machine from status to status, and `look` ties them to one interval's
pod readings. Nothing here reads or writes anything: the operator and `kubeserve up` call
`look` once per interval and apply what it gives.
"""
