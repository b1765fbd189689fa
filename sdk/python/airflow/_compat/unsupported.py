"""What the compatibility layer refuses, and how: an import error that names the feature and
(through the loader) the line of the DAG file, never a run that silently differs.

Unknown `airflow.*` modules are found by a meta-path finder placed after the real ones, and
unknown names of known modules by a module `__getattr__`. The error is also an `ImportError`,
so the usual `try: from airflow.sdk import X / except ImportError:` fallbacks keep working."""

import importlib.abc
import importlib.machinery
import sys

from weft.exceptions import UnsupportedFeatureError

# What a module path is about, for the message; the longest matching prefix wins.
_MODULE_FEATURES = {
    "airflow.providers": "this provider package",
    "airflow.sensors": "this sensor",
    "airflow.providers.standard.sensors": "this sensor",
    "airflow.providers.standard.triggers": "deferrable triggers",
    "airflow.triggers": "deferrable triggers",
    "airflow.providers.standard.operators.trigger_dagrun": "TriggerDagRunOperator",
    "airflow.operators.trigger_dagrun": "TriggerDagRunOperator",
    "airflow.providers.standard.operators.hitl": "human-in-the-loop operators",
    "airflow.providers.standard.operators.smooth": "SmoothOperator",
    "airflow.providers.standard.operators.bash_command": "this operator",
    "airflow.hooks": "this hook (weft ships `airflow.hooks.base` only)",
    "airflow.providers.standard.hooks": "this hook",
    "airflow.configuration": "reading Airflow's configuration",
    "airflow.timetables": "custom timetables",
    "airflow.datasets": "datasets (data-aware scheduling)",
    "airflow.assets": "assets (data-aware scheduling)",
    "airflow.sdk.definitions.asset": "assets (data-aware scheduling)",
    "airflow.listeners": "listeners",
    "airflow.plugins_manager": "plugins",
    "airflow.example_dags": "Airflow's own example modules",
    "airflow.kubernetes": "the Kubernetes executor",
    "airflow.executors": "executors",
    "airflow.io": "object storage",
    "airflow.sdk.io": "object storage",
    "airflow.notifications": "notifiers",
    "airflow.sdk.bases.notifier": "notifiers",
    "airflow.sdk.execution_time": "Airflow's task-execution internals",
}

# What a name of `airflow.sdk` (and friends) is, for the message.
NAME_FEATURES = {
    "Asset": "assets (data-aware scheduling)",
    "AssetAlias": "assets (data-aware scheduling)",
    "AssetAll": "assets (data-aware scheduling)",
    "AssetAny": "assets (data-aware scheduling)",
    "AssetWatcher": "asset watchers",
    "AssetOrTimeSchedule": "asset-or-time schedules",
    "AssetAccessControl": "assets (data-aware scheduling)",
    "Dataset": "datasets (data-aware scheduling)",
    "DatasetAlias": "datasets (data-aware scheduling)",
    "Metadata": "asset metadata",
    "asset": "the @asset decorator",
    "AllowedKeyMapper": "asset partitions",
    "CronPartitionTimetable": "asset partitions",
    "DayWindow": "asset partitions",
    "FanOutMapper": "asset partitions",
    "FixedKeyMapper": "asset partitions",
    "IdentityMapper": "asset partitions",
    "MinimumCount": "asset partitions",
    "MonthWindow": "asset partitions",
    "PartitionedAssetTimetable": "asset partitions",
    "PartitionedAtRuntime": "asset partitions",
    "ProductMapper": "asset partitions",
    "RollupMapper": "asset partitions",
    "SegmentWindow": "asset partitions",
    "StartOfDayMapper": "asset partitions",
    "StartOfHourMapper": "asset partitions",
    "StartOfMonthMapper": "asset partitions",
    "StartOfWeekMapper": "asset partitions",
    "StartOfYearMapper": "asset partitions",
    "WaitForAll": "asset partitions",
    "WeekWindow": "asset partitions",
    "Window": "asset partitions",
    "ObjectStoragePath": "object storage",
    "BaseNotifier": "notifiers",
    "CronTriggerTimetable": "timetable objects (use a cron string)",
    "CronDataIntervalTimetable": "timetable objects (use a cron string)",
    "DeltaTriggerTimetable": "timetable objects (use a timedelta)",
    "DeltaDataIntervalTimetable": "timetable objects (use a timedelta)",
    "MultipleCronTriggerTimetable": "timetable objects",
    "EventsTimetable": "timetable objects",
    "Timetable": "custom timetables",
    "ExceptionRetryPolicy": "retry policies",
    "RetryAction": "retry policies",
    "RetryRule": "retry policies",
    "RetryPolicy": "retry policies",
    "TriggerDagRunOperator": "TriggerDagRunOperator",
    "ExternalTaskSensor": "sensors",
    "ExternalTaskMarker": "ExternalTaskMarker",
    "PythonVirtualenvOperator": "PythonVirtualenvOperator (run-time virtualenvs)",
    "ExternalPythonOperator": "ExternalPythonOperator",
    "BranchPythonVirtualenvOperator": "BranchPythonVirtualenvOperator (run-time virtualenvs)",
    "BranchExternalPythonOperator": "BranchExternalPythonOperator",
    "SmoothOperator": "SmoothOperator",
    "EmailOperator": "sending email",
    "SimpleHttpOperator": "HTTP operators",
    "SubDagOperator": "SubDAGs (use a TaskGroup)",
    "DagParam": "DAG-level params as task arguments",
    "teardown_on_failure_fail_dagrun": "teardowns that fail the run",
}


class UnsupportedImportError(UnsupportedFeatureError, ImportError):
    """A DAG file imports something weft does not run yet."""


def unsupported(feature, detail=""):
    """The error for a feature weft refuses, as raised from a DAG file's statement."""
    suffix = f" ({detail})" if detail else ""
    return UnsupportedFeatureError(
        f"{feature} is not supported by weft's Airflow compatibility layer yet{suffix}; "
        "see docs/airflow-migration.md"
    )


def module_feature(fullname):
    best = ""
    for prefix in _MODULE_FEATURES:
        if (fullname == prefix or fullname.startswith(prefix + ".")) and len(prefix) > len(best):
            best = prefix
    return _MODULE_FEATURES.get(best, "this module")


def unsupported_import(fullname, name=None):
    if name is not None:
        feature = NAME_FEATURES.get(name, "this name")
        what = f"`{name}` from `{fullname}` ({feature})"
    else:
        what = f"`{fullname}` ({module_feature(fullname)})"
    return UnsupportedImportError(
        f"import of {what} is not supported by weft's Airflow compatibility layer yet; "
        "see docs/airflow-migration.md"
    )


def module_getattr(module_name, provided=()):
    """A module `__getattr__` that refuses every public name the module does not define."""

    def __getattr__(name):
        if name.startswith("__") or name in provided:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        # `from package import submodule` looks the name up on the package before it imports
        # the submodule, and goes on to import it only on an AttributeError: a submodule the
        # layer provides is imported here, so the statement works whatever was imported
        # before it.
        package = sys.modules.get(module_name)
        path = getattr(package, "__path__", None)
        if path is not None and importlib.machinery.PathFinder.find_spec(name, path):
            return importlib.import_module(f"{module_name}.{name}")
        raise unsupported_import(module_name, name)

    return __getattr__


class _UnsupportedLoader(importlib.abc.Loader):
    def create_module(self, spec):
        return None

    def exec_module(self, module):
        raise unsupported_import(module.__name__)


class UnsupportedModuleFinder(importlib.abc.MetaPathFinder):
    """Answers for `airflow.*` modules that the layer does not provide (it sits after the
    path finder, so real modules of the package are found first)."""

    def find_spec(self, fullname, path=None, target=None):
        if not fullname.startswith("airflow."):
            return None
        return importlib.machinery.ModuleSpec(fullname, _UnsupportedLoader(), is_package=True)


def install_finder():
    if not any(isinstance(finder, UnsupportedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(UnsupportedModuleFinder())
