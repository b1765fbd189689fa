"""The implementation behind the `airflow` import names: Airflow's DAG, operator, TaskFlow and
context API mapped onto weft's DAG model and run with Airflow's semantics in weft's Python task
runner. The modules around it (`airflow.sdk`, `airflow.operators.bash_operator`, ...) only
re-export names from here, so every spelling of a name is the same object."""
