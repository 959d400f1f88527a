"""Every bad input a demanding user tries, through the real CLI entry point: one line
``oodstudy: <what is wrong, where, and the fix>``, exit code 2, no traceback, nothing
written -- a run refused before it starts leaves no store behind.

One table, by kind: types and keys, configs that run but cannot answer the question,
sizes that cannot fit, spec files, store paths, store queries, reports, cluster addresses.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from study.cli import main
from study.store import Store

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = str(REPO / "search_spaces" / "quickstart.yaml")
THRESHOLD = str(REPO / "search_spaces" / "threshold_quickstart.yaml")
LINEAR_SINE = str(REPO / "search_spaces" / "linear_sine.yaml")
UNREACHABLE_S3 = "s3://bucket/results?endpoint_override=http://127.0.0.1:1"
# Every message proposes a fix: one of these words says what to do.
FIX = re.compile(
    r"\b(use|set|lower|raise|give|pass|check|remove|write|keep|drop|name|did you mean|swap|pick|add|"
    r"choose|tune|change|delete|try|make|fix)\b",
    re.IGNORECASE,
)


# YAML's "billion laughs" in 348 bytes: each level repeats the one above 9 times (9**7 leaves).
ALIAS_BOMB = (
    "name: bomb\n"
    + "".join(
        f"{level}: &{level} [{', '.join([f'*{above}' if above else 'lol'] * 9)}]\n"
        for above, level in zip(["", "a", "b", "c", "d", "e", "f"], "abcdefg")
    )
    + "base: {task: {digits: *g}}\n"
)


def make_read_only(path: Path) -> bool:
    """Make the directory ``path`` refuse new entries: chmod, and for root (whom modes do not
    stop) the immutable attribute; whether it worked (undo with :func:`make_writable`)."""
    path.chmod(0o555)
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(path)], capture_output=True)
    try:
        (path / ".probe").mkdir()
    except OSError:
        return True
    (path / ".probe").rmdir()
    return False


def make_writable(path: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)
    path.chmod(0o755)


@pytest.fixture(scope="module")
def places(tmp_path_factory) -> dict[str, str]:
    """Files and stores the bad inputs point at."""
    root = tmp_path_factory.mktemp("bad_inputs")
    store = Store(str(root / "store"))
    store.append(
        "trials",
        [{"trial_id": "t1", "status": "completed", "score": 1.0, "grid": "{}", "config": "{}"}],
        study="q",
        cell="all",
    )
    (root / "a_file").write_text("not a directory\n")
    (root / "binary.yaml").write_bytes(bytes(range(256)) * 4)
    (root / "empty.yaml").write_text("")
    (root / "comments.yaml").write_text("# nothing but a comment\n\n")
    (root / "list.yaml").write_text("- a\n- b\n")
    (root / "dup.yaml").write_text(
        Path(QUICKSTART).read_text().replace("    steps: 4000\n", "    steps: 4000\n    steps: 10\n")
    )
    (root / "dup_top.yaml").write_text(Path(QUICKSTART).read_text() + "name: again\n")
    (root / "bad_syntax.yaml").write_text("name: x\nbase: {task: [\n")
    (root / "nul.yaml").write_text("name: x\x00\n")
    (root / "spec_dir").mkdir()
    (root / "not_a_store").mkdir()
    (root / "not_a_store" / "notes.txt").write_text("mine\n")
    (root / "bomb.yaml").write_text(ALIAS_BOMB)
    quickstart = Path(QUICKSTART).read_text()
    (root / "nested_grid.yaml").write_text(
        quickstart.replace("  task.digits: [2, 3]\n  train.seed: [0, 1]\n", "  task: {digits: [1, 2]}\n")
    )
    (root / "nested_params.yaml").write_text(
        quickstart.replace("    train.lr: {type: loguniform,", "    train: {lr: {type: loguniform,").replace(
            "high: 3.0e-3}\n", "high: 3.0e-3}}\n"
        )
    )
    (root / "dotted_base.yaml").write_text(
        quickstart.replace("    steps: 4000\n", "").replace("base:\n", "base:\n  train.steps: 10\n")
    )
    Store(str(root / "read_only_store"))
    read_only = make_read_only(root / "read_only_store")
    yield {
        "root": str(root),
        "store": str(root / "store"),
        "file": str(root / "a_file"),
        "read_only_store": str(root / "read_only_store") if read_only else "",
    }
    make_writable(root / "read_only_store")


def bad_inputs(p: dict[str, str]) -> list[tuple[str, list[str], str]]:
    """(kind, argv, a phrase the one-line message must hold).  ``{new}`` is a fresh store
    path per row that a refused run must not create."""
    root, store, file = p["root"], p["store"], p["file"]
    run = ["run", QUICKSTART, "--store", "{new}"]
    threshold = ["run", THRESHOLD, "--store", "{new}"]
    short = ["--set", "train.steps=2", "--set", "train.eval_every=1"]  # should a refused trial train after all
    read_only = p["read_only_store"]  # "" where this machine cannot make a directory read-only
    return [
        # ---- types and keys
        ("type", ["trial", "--set", "model.n_heads=4"], "model.n_heads: unknown key; did you mean model.n_head"),
        ("type", ["trial", "--set", "train.steps=true"], "train.steps: a number is needed"),
        ("type", ["trial", "--set", "train.betas=[0.9, 1.5]"], "train.betas: AdamW's two decay rates must each"),
        (
            "type",
            ["run", f"{root}/dotted_base.yaml", "--store", "{new}"],
            "train.steps: a dotted key inside a mapping; nest it (train: {steps: ...})",
        ),
        ("type", ["run", QUICKSTART, "--store", "{new}", "--set", "pack.size=big"], "pack.size: give a whole number"),
        ("type", ["trial", "--set", "train.lr=yes"], "train.lr: a number is needed"),
        ("type", ["trial", "--set", "task.modulus=on"], "task.modulus: a number is needed"),
        ("type", ["trial", "--set", "train.betas=[0.9, true]"], "train.betas: a number is needed"),
        ("type", ["trial", "--set", "train.grad_clip=false"], "train.grad_clip: a number is needed"),
        (
            "type",
            ["trial", "--set", "task.family=icl", "--set", "task.shifts={alpha: [true]}"],
            "task.shifts: a number",
        ),
        ("type", ["trial", "--set", "train.steps=0"], "train.steps"),
        ("type", ["trial", "--set", "train.steps=1.5"], "train.steps"),
        ("type", ["trial", "--set", "model.size=huge"], "model.size"),
        ("type", ["trial", "--set", "task.family=nope"], "unknown task family"),
        ("type", ["trial", "--set", "train.steps"], "expected dotted.key=value"),
        ("type", ["trial", "--set", "train.steps=[1"], "--set value '[1': not valid YAML"),
        ("type", ["trial", "--set", "task={digits: 2, digits: 3}"], "duplicate key 'digits'"),
        ("type", ["trial", "--set", "train.steps.every=1"], "train.steps: must be a valid integer"),
        ("type", run + ["--set", "train.steps=true"], "train.steps: a number is needed"),
        ("type", run + ["--set", "grid.train.steps=[true]"], "train.steps: a number is needed"),
        ("type", run + ["--set", "max_failures=-1"], "max_failures"),
        ("type", run + ["--set", "name=a b"], "name"),
        ("type", ["run", QUICKSTART, "--store", ""], "--store is empty"),
        ("type", run + ["--name", ""], "--name is empty"),
        ("type", run + ["--name", "  "], "--name is empty"),
        ("type", ["trial", "--set", f"train.seed={10**30}"], "train.seed: must be less than 9223372036854775808"),
        ("type", run + ["--set", f"grid.train.seed=[{10**30}]"], "train.seed: must be less than"),
        ("type", run + ["--set", f"tune.seed={2**64}"], "tune.seed: must be less than 4294967296"),
        ("type", run + ["--set", f"tune.seed={2**32 - 1}"], "tune.seed=4294967295: grid point i's Optuna sampler"),
        ("type", run + ["--set", "resources.cpus=1e-300"], "resources.cpus: must be greater than or equal to 0.0001"),
        ("type", run + ["--set", "resources.gpus=0.00001"], "resources.gpus: Ray schedules GPUs in units of 0.0001"),
        ("type", ["trial", "--set", "train.lr=.inf"], "train.lr: must be a finite number"),
        ("type", ["trial", "--set", "train.weight_decay=inf"], "train.weight_decay: must be a finite number"),
        ("type", ["trial", "--set", "train.weight_decay=.nan"], "train.weight_decay: must be a finite number"),
        ("type", ["trial", "--set", f"train.steps={10**30}"], "train.steps: must be less than or equal to 1000000000"),
        (
            "type",
            run + ["--set", "early_stopping={type: asha, reduction_factor: .inf}"],
            "early_stopping.reduction_factor: must be a finite number",
        ),
        # ---- command lines: argparse's errors through the one handler; an option that names a config key
        (
            "type",
            run + ["--max-concurrent", "4"],
            "--max-concurrent is not an option of run; set spec keys with --set, e.g. --set max_concurrent=4",
        ),
        (
            "type",
            ["trial", "--steps", "10"],
            "--steps is not an option of trial; set config keys with --set, e.g. --set train.steps=10",
        ),
        (
            "type",
            ["resume", "q", "--store", store, "--max-concurrent", "3"],
            "--max-concurrent is not an option of resume: a study resumes with the spec it ran with",
        ),
        ("type", ["run"], "run: the following arguments are required: spec; check the usage with: oodstudy run --help"),
        ("type", ["rn", QUICKSTART], "'rn' is not a command; did you mean 'run'?"),
        (
            "type",
            run + ["--name", "my study"],
            "--name 'my study': not a study name: use only letters, digits and . _ + - (no spaces), starting with a "
            "letter or digit, e.g. --name my-study",
        ),
        # ---- keys: tuned and grid axes are dotted config keys; empty keys; case
        (
            "type",
            run + ["--set", "tune.params.train.lr.low=0.01"],
            "tune.params.train.lr: low=0.01 is greater than high=0.003; swap them",
        ),
        (
            "type",
            run + ["--set", "tune.params.train.lr={type: loguniform, low: 0.01, high: 0.001}"],
            "tune.params.train.lr: low=0.01 is greater than high=0.001",
        ),
        (
            "type",
            run + ["--set", "tune.params.train.lrr.low=0.01"],
            "tune.params.train.lrr: unknown key; tuned axes are dotted keys of the trial config, e.g. tune.params: "
            "{train.lr: {type: loguniform, low: 1.0e-4, high: 1.0e-2}}; did you mean tune.params.train.lr?",
        ),
        (
            "type",
            run + ["--set", "tune.params.train.lr.lo=0.01"],
            "tune.params.train.lr.lo: unknown key of a distribution; did you mean tune.params.train.lr.low?",
        ),
        (
            "type",
            run + ["--set", "grid.task.digit=[1,2]"],
            "grid.task.digit: unknown key; grid keys are dotted keys of the trial config, e.g. grid: "
            "{task.digits: [2, 3]}; did you mean grid.task.digits?",
        ),
        (
            "type",
            ["trial", "--set", "model.size=Nano"],
            "model.size: must be 'nano', 'micro', 'mini', 'small' or 'standard' (got 'Nano'); did you mean 'nano'?",
        ),
        ("type", ["trial", "--set", "task.family=ICL"], "task: unknown task family; did you mean 'icl'?"),
        (
            "type",
            ["trial", "--set", "task.eval_lengths=[0,3]"],
            "invalid trial config: task.eval_lengths=[0, 3] holds a length below 1",
        ),
        ("type", ["trial", "--set", "=5"], "--set '=5': the key is empty; write --set dotted.key=value"),
        (
            "type",
            run + ["--set", "grid.=[1]"],
            "--set 'grid.=[1]': the key is empty after 'grid.'; write --set dotted.key=value",
        ),
        # ---- impossible combinations
        ("combination", ["trial", "--set", "model.n_head=5"], "model.n_head=5 does not divide model.d_model=48"),
        ("combination", ["trial", "--set", "task.digits=6"], "task.digits=6 is longer than the operand width"),
        ("combination", ["trial", "--set", "task.mix_weight=0.5"], "task.mix_weight > 0 needs task.mix_digits"),
        (
            "combination",
            ["trial", "--set", "task.family=icl", "--set", "task.nnz=30"],
            "task.nnz=30 exceeds task.n_dims",
        ),
        (
            "combination",
            ["trial", "--set", "task.family=icl", "--set", "task.sparse_values=sign"],
            "task.sparse_values='sign' sets sparse_linear's coefficients, but no sparse prompt is drawn",
        ),
        ("combination", ["trial", "--set", "train.warmup_steps=10", "--set", "train.steps=5"], "train.warmup_steps=10"),
        ("combination", ["trial", "--set", "train.checkpoint_every=300"], "train.checkpoint_every=300"),
        ("combination", run + ["--set", "resources.cpus=1000"], "resources.cpus=1000"),
        ("combination", run + ["--set", "resources.gpus=8"], "resources.gpus=8"),
        ("combination", run + ["--set", "grid.task.digits=[]"], "grid.task.digits is empty"),
        (
            "combination",
            run + ["--set", "grid.task.digits=[1, '1', 1.0]"],
            "grid.task.digits: the values 1 and '1' and 1.0 are one value once validated",
        ),
        (
            "combination",
            run + ["--set", "tune.params={train.lr: {type: loguniform, low: 0.1, high: 0.01}}"],
            "low=0.1 is greater than high=0.01",
        ),
        (
            "combination",
            run + ["--set", "tune.params={train.lr: {type: loguniform, low: 0, high: 0.01}}"],
            "loguniform distribution needs low > 0",
        ),
        # ---- configs that run but cannot answer the question
        ("question", ["trial", "--set", "task.eval_max_len=2"], "task.eval_max_len=2 is below the training length 3"),
        (
            "question",
            ["trial", "--set", "task.mix_digits=4", "--set", "task.mix_weight=0.2", "--set", "task.eval_max_len=3"],
            "task.eval_max_len=3 is below the training length 4",
        ),
        ("question", run + ["--set", "task.eval_max_len=2"], "task.eval_max_len=2 is below the training length 3"),
        (
            "question",
            run
            + ["--set", "tune.metric=ood_exact_match", "--set", "task.eval_max_len=3", "--set", "grid.task.digits=[3]"],
            "tune.metric='ood_exact_match' is never reported",
        ),
        ("question", run + ["--set", "tune.metric=id_chance"], "chance is reported only under a modulus"),
        (
            "question",
            run + ["--set", "tune.metric=id_nmse", "--set", "tune.mode=min"],
            "not a summary metric of this study",
        ),
        ("question", run + ["--set", "tune.mode=min"], "tune.mode=min optimizes id_exact_match the wrong way"),
        (
            "question",
            ["run", LINEAR_SINE, "--store", "{new}", "--set", "tune.metric=ood_nmse_lasso"],
            "its baseline is not in task.baselines",
        ),
        (
            "question",
            [
                "run",
                LINEAR_SINE,
                "--store",
                "{new}",
                "--set",
                "task.shifts={x_scale: [1.0]}",
                "--set",
                "tune.metric=ood_nmse",
            ],
            "no task.shifts value is outside the pretraining mixture",
        ),
        ("question", run + ["--set", "tune.trials_per_grid_point=0"], "tune.trials_per_grid_point"),
        # ---- threshold searches
        (
            "question",
            threshold + ["--set", "threshold.axis=train.stepz"],
            "threshold.axis=train.stepz is not a value of the trial config; search a dotted key that holds a value",
        ),
        (
            "question",
            threshold + ["--set", "threshold.axis=train.stop_when"],
            "threshold.axis=train.stop_when is not a value",
        ),
        (
            "question",
            threshold + ["--set", "grid.train.steps=[10, 20]"],
            "threshold.axis=train.steps is also a grid axis; the search proposes its values, so remove grid.train.steps",
        ),
        (
            "question",
            threshold + ["--set", "threshold.success.metric=ood_nmse"],
            "threshold.success.metric='ood_nmse' is not a summary metric of this study",
        ),
        (
            "question",
            threshold + ["--set", "threshold.success.metric=ood_exact_match", "--set", "task.eval_max_len=1"],
            "threshold.success.metric='ood_exact_match' is never reported",
        ),
        (
            "question",
            threshold + ["--set", "threshold.budget=2"],
            "threshold.budget=2 is below threshold.seeds_per_point=3",
        ),
        ("question", threshold + ["--set", "grid.train.seed=[0, 1]"], "grid.train.seed with a threshold search"),
        (
            "question",
            threshold + ["--set", "tune.params={train.lr: {type: loguniform, low: 0.001, high: 0.01}}"],
            "Optuna per point is not supported with a threshold search; drop tune.params",
        ),
        ("question", threshold + ["--set", "early_stopping.type=asha"], "early_stopping.type=asha with a threshold"),
        (
            "question",
            threshold + ["--set", "tune.metric=id_exact_match"],
            "tune.metric='id_exact_match' differs from threshold.success.metric='loss'",
        ),
        (
            "question",
            threshold + ["--set", "threshold.integer=false"],
            "threshold.axis=train.steps: a proposal between the ends, e.g. 41.3333, is not a valid value",
        ),
        ("question", threshold + ["--set", "threshold.low=0"], "train.steps: must be greater than or equal to 1"),
        ("question", ["store", "compact", "--study", "nosuch", "--store", store], "--study nosuch: no such study"),
        (
            "question",
            ["store", "compact", "--study", "bad name!", "--store", store],
            "--study bad name!: no such study",
        ),
        # ---- sizes that cannot fit
        ("size", ["trial", "--set", "task.eval_examples=10000000000"], "task.eval_examples=10000000000 drives it"),
        (
            "size",
            ["trial", "--set", "model.d_model=1000000", "--set", "model.n_head=4"],
            "model.d_model=1000000 drives it",
        ),
        ("size", ["trial", "--set", "model.d_model=1000000"], "model.n_head=3 does not divide model.d_model=1000000"),
        (
            "size",
            ["trial", "--set", "task.family=icl", "--set", "task.n_dims=10000000"],
            "task.n_dims=10000000 drives it",
        ),
        ("size", ["trial", "--set", "train.batch_size=1000000000"], "train.batch_size=1000000000 drives it"),
        (
            "size",
            ["trial", "--set", "task.eval_examples=10000000", "--set", "task.eval_batch_size=100000000"],
            "task.eval_examples=10000000 drives it",
        ),
        ("size", ["trial", "--set", "model.n_layer=1000000"], "model.n_layer=1000000 drives it"),
        (
            "size",
            ["trial", "--set", "task.family=icl", "--set", "task.eval_prompts=1000000000"],
            "task.eval_prompts=1000000000 drives it",
        ),
        ("size", run + ["--set", "task.eval_examples=10000000000"], "task.eval_examples=10000000000 drives it"),
        ("size", run + ["--set", "train.batch_size=1000000000"], "train.batch_size=1000000000 drives it"),
        (
            "size",
            run
            + ["--set", f"grid.train.seed={list(range(1000))}", "--set", f"grid.train.steps={list(range(1, 1001))}"],
            "the grid has 2,000,000 points (task.digits (2) x train.seed (1,000) x train.steps (1,000)), more than the 100,000",
        ),
        (
            "size",
            ["run", str(Path(root) / "bomb.yaml"), "--store", "{new}"],
            "its aliases (*name) repeat 11,434,267 YAML nodes",
        ),
        (
            "size",
            ["trial", "--set", "task=" + ALIAS_BOMB.split("\n", 1)[1].replace("\n", ", ").join("{}")],
            "its aliases (*name) repeat",
        ),
        # ---- spec files
        ("spec file", ["run", str(Path(root) / "spec_dir")], "spec_dir: is a directory, not a YAML file"),
        ("spec file", ["run", str(Path(root) / "binary.yaml")], "binary.yaml: not a text file"),
        ("spec file", ["run", str(Path(root) / "nul.yaml")], "nul.yaml: not a text file"),
        ("spec file", ["run", str(Path(root) / "empty.yaml")], "empty.yaml: the file is empty"),
        ("spec file", ["run", str(Path(root) / "comments.yaml")], "comments.yaml: the file is empty"),
        ("spec file", ["trial", str(Path(root) / "empty.yaml")], "empty.yaml: the file is empty"),
        ("spec file", ["run", str(Path(root) / "list.yaml")], "list.yaml: the top level must be a mapping"),
        ("spec file", ["run", str(Path(root) / "dup.yaml")], "duplicate key 'steps'"),
        ("spec file", ["run", str(Path(root) / "dup_top.yaml")], "duplicate key 'name'"),
        ("spec file", ["run", str(Path(root) / "bad_syntax.yaml")], "bad_syntax.yaml: not valid YAML: line"),
        ("spec file", ["run", str(Path(root) / "nothing.yaml")], "nothing.yaml: no such file"),
        ("spec file", ["run", file + "/spec.yaml"], "a_file/spec.yaml: no such file"),
        (
            "spec file",
            ["run", str(Path(root) / "nested_grid.yaml"), "--store", "{new}"],
            "grid.task: grid keys are dotted config keys, not nested sections; write grid: {task.digits: [1, 2]}",
        ),
        (
            "spec file",
            ["run", str(Path(root) / "nested_params.yaml"), "--store", "{new}"],
            "tune.params.train: tuned axes are dotted config keys, not nested sections; write tune: {params: "
            "{train.lr: {type: loguniform, low: 0.001, high: 0.003}}}",
        ),
        # ---- store paths
        ("store path", ["run", QUICKSTART, "--store", file + "/results"], "a_file is a file, not a directory"),
        (
            "store path",
            ["run", QUICKSTART, "--store", "/proc/oodstudy-results"],
            "cannot create a store at /proc/oodstudy",
        ),
        (
            "store path",
            ["run", QUICKSTART, "--store", "/sys/oodstudy-results"],
            "cannot create a store at /sys/oodstudy",
        ),
        ("store path", ["run", QUICKSTART, "--store", file], "a_file is a file, not a store"),
        ("store path", ["run", QUICKSTART, "--store", str(Path(root) / "not_a_store")], "is not an oodstudy store"),
        ("store path", ["store", "ls", "--store", str(Path(root) / "missing")], "no store at"),
        ("store path", ["store", "ls", "--store", file], "a_file is a file, not a store"),
        ("store path", ["store", "ls", "--store", "/dev/null"], "pass the --store a run wrote"),
        (
            "store path",
            ["store", "validate", "--store", "/proc/oodstudy-results"],
            "no store at /proc/oodstudy-results",
        ),
        ("store path", ["store", "ls", "--store", UNREACHABLE_S3], "cannot open a store at s3://bucket/results"),
        ("store path", ["run", QUICKSTART, "--store", UNREACHABLE_S3], "run directory"),
        ("store path", ["store", "ls", "--store", "nosuchscheme://x/y"], "nosuchscheme://x/y"),
        (
            "store path",
            run + ["--set", f"optuna_storage=sqlite:///{root}/nosuchdir/optuna.db"],
            "optuna_storage: the SQLite file's directory",
        ),
        ("store path", run + ["--set", "name=" + "a" * 250], "name: a study name of 250 characters; use at most 100"),
        ("store path", run + ["--set", "name=" + "a" * 300], "name: a study name of 300 characters; use at most 100"),
        (
            "store path",
            ["trial", "--store", "{new}", "--study", "../evil"] + short,
            "--study '../evil': not a study name",
        ),
        ("store path", ["trial", "--store", "{new}", "--study", "a" * 250] + short, "use at most 100"),
        *(
            [
                ("store path", ["run", QUICKSTART, "--store", read_only], "cannot write to the store at"),
                ("store path", ["trial", "--store", read_only] + short, "cannot write to the store at"),
            ]
            if read_only
            else []
        ),
        # ---- store queries
        ("query", ["store", "sql", "", "--store", store], "the query is empty"),
        ("query", ["store", "sql", "   -- only a comment", "--store", store], "the query is empty"),
        (
            "query",
            ["store", "sql", f"COPY (SELECT 1) TO '{root}/out.csv'", "--store", store],
            "COPY statements are refused",
        ),
        (
            "query",
            ["store", "sql", f"COPY trials TO '{store}/trials/study=q/x.parquet'", "--store", store],
            "COPY statements are refused",
        ),
        ("query", ["store", "sql", "SELECT * FROM read_csv('/etc/passwd')", "--store", store], "/etc/passwd"),
        (
            "query",
            ["store", "sql", f"SELECT * FROM read_parquet('{root}/**/*.parquet')", "--store", store],
            "file system operations are disabled",
        ),
        ("query", ["store", "sql", f"ATTACH '{root}/other.db'", "--store", store], "ATTACH statements are refused"),
        ("query", ["store", "sql", "SELECT 1; SELECT 2", "--store", store], "2 statements given"),
        (
            "query",
            ["store", "sql", "SET enable_external_access = true", "--store", store],
            "SET statements are refused",
        ),
        ("query", ["store", "sql", "CREATE TABLE t AS SELECT 1", "--store", store], "CREATE statements are refused"),
        ("query", ["store", "sql", "INSTALL httpfs", "--store", store], "statements are refused"),
        ("query", ["store", "sql", "SELEKT 1", "--store", store], "syntax error"),
        ("query", ["store", "sql", "SELECT nosuch FROM trials", "--store", store], "nosuch"),
        (
            "query",
            ["store", "sql", "SELECT * FROM trial", "--store", store],
            "no table trial in the store; did you mean trials?",
        ),
        (
            "query",
            ["store", "sql", "SELECT 1", "--store", store, "--memory-limit", "lots"],
            "--memory-limit 'lots': not a size DuckDB reads",
        ),
        ("query", ["store", "sql", "SELECT 1", "--store", store, "--timeout", "0"], "--timeout 0: give the seconds"),
        (
            "query",
            ["store", "sql", "SELECT 1", "--store", store, "--timeout", "nan"],
            "--timeout nan: give the seconds",
        ),
        ("query", ["store", "sql", "SELECT 1", "--store", store, "--threads", "0"], "--threads 0: give 1 to"),
        (
            "query",
            ["store", "sql", "SELECT 1", "--store", store, "--max-rows", "-1"],
            "--max-rows -1: give the rows to print",
        ),
        (
            "query",
            ["store", "sql", "SELECT 1", "--store", store, "--out", f"{root}/rows.txt"],
            "name a .csv or .parquet file",
        ),
        (
            "query",
            ["store", "sql", "SELECT 1", "--store", store, "--out", f"{root}/nosuchdir/rows.csv"],
            "no directory",
        ),
        (
            "query",
            ["store", "sql", "SELECT [1, 2] AS l", "--store", store, "--out", f"{root}/l.csv"],
            "cannot write it",
        ),
        (
            "query",
            [
                "store",
                "sql",
                "SELECT length(list(i)) FROM range(3000000000) t(i)",
                "--store",
                store,
                "--memory-limit",
                "300MB",
            ],
            "memory limit of 300MB",
        ),
        (
            "query",
            ["store", "sql", "SELECT sum(i % 7) FROM range(1000000000000) t(i)", "--store", store, "--timeout", "1"],
            "time limit of 1 s",
        ),
        # ---- reports
        (
            "report",
            ["report", "--store", store, "--study", "q", "--out", "/proc/oodstudy-report"],
            "--out /proc/oodstudy-report",
        ),
        (
            "report",
            ["report", "--store", store, "--study", "q", "--out", file + "/report"],
            "a_file/report: cannot write",
        ),
        ("report", ["report", "--store", store, "--study", "nosuch"], "study 'nosuch' is not in the store"),
        ("report", ["report", "--store", str(Path(root) / "missing")], "no store at"),
        *[
            (
                "report",
                ["report", "--store", store, "--study", "q", "--out", f"{root}/report_{i}", "--threshold", value],
                f"--threshold {value}: the boundary is a share of the ID score, in (0, 1]",
            )
            for i, value in enumerate(["nan", "-5", "inf", "50"])
        ],
        # ---- cluster addresses and studies
        ("cluster", run + ["--address", "127.0.0.1:1"], "--address 127.0.0.1:1: no Ray cluster answers there"),
        ("cluster", run + ["--address", "ray://127.0.0.1:1"], "--address ray://127.0.0.1:1: no Ray cluster"),
        ("cluster", run + ["--address", "headnode"], "--address headnode: expected host:port"),
        ("cluster", run + ["--address", "http://127.0.0.1:8265"], "expected host:port"),
        ("cluster", ["resume", "nope", "--store", store], "no study named 'nope'"),
        ("cluster", ["status", "nope", "--store", store], "no study named 'nope'"),
        ("cluster", ["status", "bad name!", "--store", store], "cannot be a study name"),
        ("cluster", ["jobs", "--address", "http://127.0.0.1:9", "--timeout", "0"], "--timeout 0: give the seconds"),
        ("cluster", ["status", "tiny", "--store", file], "a_file: is a file, not a store; pass the directory"),
    ]


def test_every_bad_input_gets_one_line_naming_the_field_and_the_fix(places, capsys):
    rows = bad_inputs(places)
    assert len({tuple(argv) for _, argv, _ in rows}) == len(rows) >= 60  # distinct inputs
    assert {kind for kind, _, _ in rows} == {
        "type",
        "combination",
        "question",
        "size",
        "spec file",
        "store path",
        "query",
        "report",
        "cluster",
    }
    failures = []
    for i, (kind, argv, phrase) in enumerate(rows):
        fresh = str(Path(places["root"]) / f"fresh_{i}")
        argv = [a.replace("{new}", fresh) for a in argv]
        code = main(argv)
        out, err = capsys.readouterr()
        lines = err.strip().splitlines()
        problem = (
            code != 2
            and f"exit {code}"
            or out
            and f"stdout {out!r}"
            or len(lines) != 1
            and f"{len(lines)} lines"
            or not lines[0].startswith("oodstudy: ")
            and "no oodstudy: prefix"
            or "Traceback" in err
            and "traceback"
            or phrase not in lines[0]
            and f"no {phrase!r}"
            or not FIX.search(lines[0])
            and "no fix"
            or Path(fresh).exists()
            and "a store was created"
        )
        if problem:
            failures.append(f"[{kind}] {argv}: {problem}: {err.strip()}")
    assert not failures, "\n".join(failures)


def test_help_still_prints_and_exits_0(capsys):
    """Refusing a command line through the handler leaves argparse's --help as it was."""
    for argv in (["--help"], ["run", "--help"], ["store", "ls", "--help"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 0, argv
        assert "usage: oodstudy" in capsys.readouterr().out, argv
