"""Task groups: a folder of tasks in the UI whose ids are prefixed `group.task`, and a unit
for dependencies (`group >> task` links the group's leaves, `task >> group` its roots)."""

from . import _context
from .dag import validate_id
from .exceptions import BadArgumentError
from .operators import DependencyMixin


class TaskGroup(DependencyMixin):
    def __init__(
        self,
        group_id,
        tooltip="",
        prefix_group_id=True,
        parent_group=None,
        dag=None,
        default_args=None,
        **display_arguments,
    ):
        dag = dag if dag is not None else (parent_group.dag if parent_group else _context.current_dag())
        if dag is None:
            raise BadArgumentError(
                f"task group `{group_id}` is not in a DAG; create it inside `with DAG(...)`"
            )
        validate_id(group_id, "group_id")
        self.dag = dag
        self.parent_group = parent_group if parent_group is not None else _context.current_group(dag)
        self.prefix_group_id = prefix_group_id
        self.group_id = self.parent_group.child_id(group_id) if self.parent_group else group_id
        self.tooltip = tooltip or None
        self.default_args = dict(default_args or {})
        # Colors and other display-only options Airflow accepts.
        self.display_arguments = display_arguments
        self.children = {}
        dag.add_task_group(self)
        if self.parent_group is not None:
            self.parent_group.add_child(self)

    def __repr__(self):
        return f"<TaskGroup {self.group_id}>"

    def child_id(self, label):
        return f"{self.group_id}.{label}" if self.prefix_group_id else label

    def add_child(self, child):
        key = getattr(child, "task_id", None) or child.group_id
        self.children[key] = child

    def inherited_default_args(self):
        merged = {}
        if self.parent_group is not None:
            merged.update(self.parent_group.inherited_default_args())
        merged.update(self.default_args)
        return merged

    def __enter__(self):
        _context.push(self)
        return self

    def __exit__(self, *exc_info):
        _context.pop(self)
        return False

    def all_tasks(self):
        tasks = []
        for child in self.children.values():
            if isinstance(child, TaskGroup):
                tasks.extend(child.all_tasks())
            else:
                tasks.append(child)
        return tasks

    def roots(self):
        tasks = self.all_tasks()
        inside = {task.task_id for task in tasks}
        return [t for t in tasks if not any(up in inside for up in t.upstream_task_ids)]

    def leaves(self):
        tasks = self.all_tasks()
        inside = {task.task_id for task in tasks}
        return [t for t in tasks if not any(down in inside for down in t.downstream_task_ids)]

    def to_json(self):
        return {
            "group_id": self.group_id,
            "parent_group": self.parent_group.group_id if self.parent_group else None,
            "tooltip": self.tooltip,
        }
