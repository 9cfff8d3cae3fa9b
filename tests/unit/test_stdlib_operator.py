"""operator/ is a source root, not a package: the stdlib's `operator` must stay importable."""

import operator
import sysconfig
from pathlib import Path


def test_import_operator_is_the_stdlib_module() -> None:
    assert operator.add(2, 3) == 5
    assert hasattr(operator, "itemgetter")
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    module_file = getattr(operator, "__file__", None)
    assert module_file is not None
    assert Path(module_file).resolve().is_relative_to(stdlib)


def test_source_root_has_no_package_marker() -> None:
    root = Path(__file__).resolve().parents[2]
    assert (root / "operator" / "kubeserve" / "__init__.py").is_file()
    assert not (root / "operator" / "__init__.py").exists()


def test_kubeserve_is_importable_from_the_source_root() -> None:
    import kubeserve

    assert Path(kubeserve.__file__).resolve().parent.parent.name == "operator"
