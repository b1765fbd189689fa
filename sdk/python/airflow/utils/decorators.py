"""`airflow.utils.decorators`: `apply_defaults`, which Airflow 1.x operators still carry; the
compatibility layer applies default_args to every operator anyway, so it changes nothing."""


def apply_defaults(function):
    return function
