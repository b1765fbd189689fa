"""weft's Airflow compatibility layer: the `airflow` import names that DAG files use, mapped
onto weft's DAG model (`from airflow import DAG`, `airflow.sdk`, `airflow.operators.*`,
`airflow.providers.standard.*`, ...). Anything weft does not run yet is refused at import with
an error naming the feature; see docs/airflow-migration.md."""

from airflow._compat.unsupported import install_finder, module_getattr

install_finder()

from airflow._compat.models import DAG  # noqa: E402

# The Airflow release whose behaviour this layer follows.
__version__ = "3.3.2"
__all__ = ["DAG", "__version__"]
__getattr__ = module_getattr(__name__)
