"""Every kind of bad DAG file gives its kind and the line of the offending statement."""

import pytest

from conftest import run_processor

CASES = [
    ("syntax", 2, "from weft import DAG\nwith DAG('x') as d\n    pass\n"),
    ("exception", 3, "from weft import DAG\nx = 1\ny = x / 0\n"),
    ("cycle", 6, "from weft import DAG, EmptyOperator\nwith DAG('c'):\n    a = EmptyOperator(task_id='a')\n"
                 "    b = EmptyOperator(task_id='b')\n    a >> b\n    b >> a\n"),
    ("duplicate_dag_id", 3, "from weft import DAG\nDAG('same')\nDAG('same')\n"),
    ("duplicate_task_id", 4, "from weft import DAG, EmptyOperator\nwith DAG('d'):\n"
                             "    EmptyOperator(task_id='t')\n    EmptyOperator(task_id='t')\n"),
    ("bad_schedule", 2, "from weft import DAG\nDAG('s', schedule='* * *')\n"),
    ("bad_schedule", 2, "from weft import DAG\nDAG('s', schedule='@fortnightly')\n"),
    ("bad_schedule", 2, "from weft import DAG\nDAG('s', schedule='0 25 * * *')\n"),
    ("unknown_timezone", 2, "from weft import DAG\nDAG('z', timezone='Mars/Olympus')\n"),
    ("bad_argument", 3, "from weft import DAG, EmptyOperator\nwith DAG('r'):\n"
                        "    EmptyOperator(task_id='t', trigger_rule='all_sucess')\n"),
]


@pytest.mark.parametrize("kind,line,text", CASES)
def test_bad_file_reports_kind_and_line(dag_file, kind, line, text):
    [answer] = run_processor(dag_file(text))
    assert answer["dags"] == []
    assert (answer["error"]["kind"], answer["error"]["line"]) == (kind, line), answer["error"]


def test_cycle_names_its_tasks(dag_file):
    [answer] = run_processor(dag_file(CASES[2][2]))
    assert "a -> b -> a" in answer["error"]["message"]


def test_prints_of_the_dag_file_do_not_corrupt_the_answer(dag_file):
    text = "import os\nfrom weft import DAG\nprint('noise')\nos.system('echo more noise')\nDAG('quiet')\n"
    [answer] = run_processor(dag_file(text))
    assert answer["error"] is None
    assert [dag["dag_id"] for dag in answer["dags"]] == ["quiet"]


def test_each_file_is_imported_in_isolation(dag_file):
    first = dag_file("from weft import DAG\nDAG('one')\n", "one.py")
    second = dag_file("from weft import DAG\nDAG('two')\n", "two.py")
    answers = run_processor(first, second)
    assert [[dag["dag_id"] for dag in answer["dags"]] for answer in answers] == [["one"], ["two"]]


def test_valid_cron_forms_pass():
    from weft.schedule import validate_cron

    for expression in ["*/5 * * * *", "0 9-17 * * mon-fri", "0 0 1,15 jan,jul *", "0 0 L * *", "@quarterly"]:
        validate_cron(expression)
