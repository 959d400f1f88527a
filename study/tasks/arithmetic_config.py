"""The arithmetic family's config, its metrics (with their directions) and its limits.

Torch-free, so that a config is checked before torch (or Ray) is imported; the task
itself is :mod:`study.tasks.arithmetic`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from study.section import Section
from study.tasks.operations import INT64_MAX, OPERATIONS, operation
from study.tasks.position_schemes import position_scheme
from study.naming import summary_metric

# An operation's name: pydantic checks it against study.tasks.operations.OPERATIONS; a type
# checker, which cannot read a Literal built at runtime, sees a str.
if TYPE_CHECKING:
    OperationName = str
else:
    OperationName = Literal[tuple(OPERATIONS)]

FAMILY = "arithmetic"
INT64_DIGITS = 18  # the most decimal digits every int64 number of that many digits fits in
# Index hint tokens (Zhou et al., arXiv 2402.09371): the letter before a digit names its
# significance, HINTS[s] for the digit worth 10^s.
HINTS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
END, PAD = "$", "_"


@dataclass(frozen=True)
class IdRuleFormat:
    """What a task id rule (a position scheme's ``ids``, see :mod:`study.tasks.position_schemes`)
    assigns and needs of the format; the rule itself is :data:`study.tasks.arithmetic_positions.ID_RULES`.

    units_id:            the id of a units digit (a digit worth 10^s gets units_id + s), or None for
                         a sorted random subset of the id range, one id per token
    by_significance:     numbers the answer digits by significance as they are written
    symbols_below_units: the operator and '=' take the id one below the units digits
    """

    units_id: int | None
    by_significance: bool = False
    symbols_below_units: bool = False


ID_RULE_FORMATS: dict[str, IdRuleFormat] = {
    "coupled": IdRuleFormat(units_id=2, by_significance=True, symbols_below_units=True),
    "abacus": IdRuleFormat(units_id=1, by_significance=True),
    "randomized": IdRuleFormat(units_id=None),
}

# The per-condition metrics the task reports, each with its direction ("max": higher
# is better); a trial's summary metrics are "<split>_<metric>".  ``chance`` is the
# level the residue structure predicts (a reference, read like an accuracy).
METRICS: dict[str, str] = {
    "exact_match": "max",
    "digit_acc": "max",
    "equivalence": "max",
    "equivalence_of_wrong": "max",
    "chance": "max",
}
PRIMARY_METRIC = "exact_match"  # the headline of the breakdown table
# The structure scores of the hidden states (``representations`` kinds) its probes write.
STRUCTURE_KINDS = (
    "probe_digit",
    "probe_digit_equiv",
    "probe_carry",
    "silhouette_digit",
    "repr_equivalence",
    "repr_equivalence_chance",
    "repr_equivalence_digit",
)
ATTENTION_KINDS = ("attention_alignment", "attention_argmax")  # with task.probes.attention


class ArithmeticProbes(Section):
    """Structure scores of the hidden states at the answer digits (see ``Arithmetic.probe_scores``)."""

    enabled: bool = Field(True, description="compute the probe scores at evaluations")
    every: int | None = Field(
        None, ge=1, description="probe at evaluations whose step is a multiple of this; null: every evaluation"
    )
    points: int = Field(
        512, ge=16, description="ID probe inputs (3/4 fit the probes, 1/4 test them); half as many OOD per length"
    )
    positions: list[int] | None = Field(
        None, description="answer digits to probe (0 = units); null: every digit an ID answer has"
    )
    layers: Literal["last", "all"] | list[int] = Field(
        "last",
        description="hidden states to probe: last (the final state, layer -1), all (every block's output "
        "0..n_layer-1 and the final state), or a list of those layer numbers",
    )
    attention: bool = Field(
        True, description="attention alignment per layer, head and answer digit at the probed evaluations"
    )


class ArithmeticTask(Section):
    """n-digit arithmetic as a token sequence, e.g. ``00349+00705=45010`` (reversed answer).

    Training operands come from a mixture of length components: the main one with
    ``digits`` and, when ``mix_weight > 0``, a second one with ``mix_digits``.
    """

    family: Literal["arithmetic"] = "arithmetic"
    op: OperationName = "add"
    modulus: int | None = Field(None, ge=2, description="answer is f(a, b) mod p when set")
    digits: int = Field(3, ge=1, description="training length n of the main component")
    sampling: Literal["below", "D", "ab", "lengths"] = Field(
        "below",
        description="below: both operands < 10^n; D: one operand exactly n digits, the other "
        "< 10^n (D_n); ab: both exactly n digits (ab_n); lengths: each operand's digit count "
        "uniform in 1..n, then uniform among the numbers of that length",
    )
    mix_digits: int | None = Field(None, ge=1, description="length of the second component")
    mix_weight: float = Field(0.0, ge=0.0, le=1.0, description="share of the second component")
    pad: bool = Field(True, description="zero-pad operands to `width` digits")
    random_zero_pad: bool = Field(
        False,
        description="unpadded training only: write each training operand with leading zeros up to a width "
        "drawn uniformly between its digit count and `width` (evaluation stays unpadded)",
    )
    width: int = Field(5, ge=1, le=40, description="operand width when padded; longest operand")
    reverse: bool = Field(True, description="write the answer least significant digit first")
    symbols: bool = Field(False, description="use operator and '=' tokens between the fields")
    train_set: Literal["fixed", "fresh"] = Field(
        "fixed", description="fixed: a finite seeded training set; fresh: new samples every step"
    )
    train_fraction: float | None = Field(0.01, gt=0.0, le=1.0, description="of all pairs")
    train_size: int | None = Field(None, ge=1, description="examples; overrides train_fraction")
    index_hints: bool = Field(False, description="a hint letter before every digit names its significance")
    eval_max_len: int = Field(5, ge=1, description="evaluate operand lengths 1..eval_max_len")
    eval_lengths: list[int] | None = Field(
        None, min_length=1, description="operand lengths to evaluate instead of 1..eval_max_len"
    )
    eval_grid: Literal["square", "diagonal"] = Field(
        "square", description="square: every (len_a, len_b) pair of lengths; diagonal: len_a = len_b only"
    )
    eval_examples: int = Field(512, ge=1, description="examples per (len_a, len_b) condition")
    eval_batch_size: int = Field(4096, ge=1)
    probes: ArithmeticProbes = Field(default_factory=ArithmeticProbes)

    @property
    def training_lengths(self) -> list[int]:
        lengths = [self.digits]
        if self.mix_digits is not None and self.mix_weight > 0:
            lengths.append(self.mix_digits)
        return lengths

    @property
    def evaluated_lengths(self) -> list[int]:
        """The operand lengths of the evaluation conditions, increasing."""
        return sorted(set(self.eval_lengths)) if self.eval_lengths else list(range(1, self.eval_max_len + 1))

    @property
    def evaluated_pairs(self) -> list[tuple[int, int]]:
        """(len_a, len_b) of every evaluation condition: the square of the lengths, or its diagonal."""
        lengths = self.evaluated_lengths
        if self.eval_grid == "diagonal":
            return [(n, n) for n in lengths]
        return [(a, b) for a in lengths for b in lengths]

    def evaluated_conditions(self) -> list[dict[str, object]]:
        """The eval-row columns of every evaluation condition (what a claim's ``at`` may name):
        split ("id" when max(len_a, len_b) <= train_len), len_a, len_b."""
        return [
            {"split": "id" if max(a, b) <= self.train_len else "ood", "len_a": a, "len_b": b}
            for a, b in self.evaluated_pairs
        ]

    def structure_kinds(self) -> tuple[str, ...]:
        """The ``representations`` kinds its probes score (README, "Structure probes")."""
        if not self.probes.enabled:
            return ()
        return STRUCTURE_KINDS + (ATTENTION_KINDS if self.probes.attention else ())

    @model_validator(mode="before")
    @classmethod
    def _eval_max_len_from_lengths(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("eval_lengths"):
            longest = max(data["eval_lengths"])
            if data.get("eval_max_len", longest) != longest:
                raise ValueError(
                    f"task.eval_max_len={data['eval_max_len']} disagrees with max(task.eval_lengths)={longest}; "
                    "drop task.eval_max_len (it follows task.eval_lengths)"
                )
            data = {**data, "eval_max_len": longest}
        return data

    @property
    def train_len(self) -> int:
        """n of the equivalence oracle: the longest training length."""
        return max(self.training_lengths)

    @model_validator(mode="after")
    def _check(self) -> "ArithmeticTask":
        if self.mix_weight > 0 and self.mix_digits is None:
            raise ValueError(
                "task.mix_weight > 0 needs task.mix_digits (the length of the second "
                "component); set task.mix_digits or task.mix_weight=0"
            )
        for name in ("digits", "mix_digits", "eval_max_len"):
            value = getattr(self, name)
            if value is not None and value > self.width:
                raise ValueError(
                    f"task.{name}={value} is longer than the operand width task.width="
                    f"{self.width}; raise task.width to at least {value}"
                )
        if self.eval_lengths and min(self.eval_lengths) < 1:
            raise ValueError(f"task.eval_lengths={self.eval_lengths} holds a length below 1; use lengths >= 1")
        if self.train_size is not None and self.train_set == "fresh":
            raise ValueError("task.train_size is only used with task.train_set=fixed")
        check_supported(self)  # the task's own limits: int64 ranges, set sizes
        if self.eval_max_len < self.train_len:
            raise ValueError(
                f"task.eval_max_len={self.eval_max_len} is below the training length {self.train_len} "
                "(task.digits / task.mix_digits): the training length would never be evaluated and "
                f"there would be no OOD condition; set task.eval_max_len to at least {self.train_len + 1}"
            )
        return self


# --------------------------------------------------------------------------- format sizes


def hint_factor(cfg: ArithmeticTask) -> int:
    """Tokens per digit: 2 with index hints (hint letter, digit), else 1."""
    return 2 if cfg.index_hints else 1


def answer_digits(cfg: ArithmeticTask, n: int) -> int:
    """Most digits an answer can have when both operands have at most n digits."""
    bound = operation(cfg.op).answer_digits(n)
    if cfg.modulus is not None:
        bound = min(bound, len(str(cfg.modulus - 1)))
    return bound


def answer_width(cfg: ArithmeticTask, n: int) -> int:
    """Answer tokens in a sequence: the fixed padded width (times 2 with index hints), or
    the digits plus the end token."""
    if cfg.pad:
        if cfg.modulus is not None:
            return len(str(cfg.modulus - 1)) * hint_factor(cfg)
        return operation(cfg.op).answer_digits(cfg.width) * hint_factor(cfg)
    return answer_digits(cfg, n) + 1


def vocabulary(cfg: ArithmeticTask) -> list[str]:
    """Token strings by id: the digits 0-9 (id = digit), then only the symbols the format
    uses, then (with index hints) one hint letter per significance the format writes."""
    vocab = [str(d) for d in range(10)]
    if cfg.symbols:
        vocab += [operation(cfg.op).symbol, "="]
    if not cfg.pad:
        vocab += [END, PAD]
    if cfg.index_hints:
        vocab += list(HINTS[: max(cfg.width, answer_width(cfg, cfg.width) // 2)])
    return vocab


def field_width(cfg: ArithmeticTask, n: int) -> int:
    """Tokens of an operand field holding up to n digits: the padding width (times 2 with
    index hints), or n."""
    return cfg.width * hint_factor(cfg) if cfg.pad else n


def prompt_length(cfg: ArithmeticTask, field_a: Any, field_b: Any) -> Any:
    """Tokens before the first answer token: the two operand fields (ints, or Long
    tensors of per-example field lengths), plus the op and '=' symbols when used."""
    return field_a + field_b + (2 if cfg.symbols else 0)


def sequence_length(cfg: ArithmeticTask, n: int) -> int:
    """Tokens in the longest full sequence (prompt + answer) with operands of <= n digits."""
    w = field_width(cfg, n)
    return prompt_length(cfg, w, w) + answer_width(cfg, n)


def training_field_digits(cfg: ArithmeticTask) -> int:
    """Digits of the widest operand field in training: ``width`` under random zero padding, else the training length."""
    return cfg.width if cfg.random_zero_pad else cfg.train_len


def longest_input(cfg: ArithmeticTask) -> int:
    """Positions the model reads in the longest sequence of training or evaluation."""
    train_len = training_field_digits(cfg)
    return max(sequence_length(cfg, train_len), sequence_length(cfg, max(cfg.eval_max_len, cfg.train_len))) - 1


def largest_position_id(cfg: ArithmeticTask, scheme: str) -> int:
    """The largest id ``scheme`` assigns before a training offset (coupled, abacus) or the
    number of ids a sequence needs (randomized).  Abacus: 1 + the largest significance
    in a sequence (the answer's slot for the end token included); coupled: 2 + it (its
    ids start at 1 for the symbols, see ``arithmetic_positions.coupled_ids``)."""
    rule = ID_RULE_FORMATS[position_scheme(scheme).ids]
    if rule.units_id is None:
        return longest_input(cfg)
    n = max(cfg.eval_max_len, cfg.train_len)
    operand_digits = cfg.width if cfg.pad or cfg.random_zero_pad else n
    answer_slots = answer_width(cfg, n) // hint_factor(cfg)
    return rule.units_id + max(operand_digits - 1, answer_slots - 1)


def check_position_scheme(cfg: ArithmeticTask, scheme: str, max_position: int) -> None:
    """Reject a task-computed position scheme (coupled, abacus, randomized) this format
    cannot carry, naming the field (called by the trial config's validation)."""
    rule = ID_RULE_FORMATS[position_scheme(scheme).ids]
    if rule.by_significance and not cfg.reverse:
        raise ValueError(
            f"model.pos_encoding={scheme} numbers the answer digits by significance as they are written, "
            "which needs the answer least significant digit first; set task.reverse=true"
        )
    if rule.symbols_below_units and not cfg.symbols:
        raise ValueError(
            f"model.pos_encoding={scheme} gives the '=' token, which predicts the answer's units digit, the id "
            "below the units digits (Cho et al., arXiv 2405.20671); without it the last operand digit would "
            "predict the units digit on the id of the digits it sums; set task.symbols=true"
        )
    largest = largest_position_id(cfg, scheme)
    if rule.units_id is None and max_position < largest:
        raise ValueError(
            f"model.pos_encoding={scheme} draws {largest} distinct ids for the longest sequence, more than "
            f"model.max_position={max_position}; set model.max_position to at least {largest} (a few times "
            "more lets long sequences use ids seen in training)"
        )
    if rule.units_id is not None and max_position <= largest:
        raise ValueError(
            f"model.pos_encoding={scheme} gives ids up to {largest} for this task (task.width / "
            f"task.eval_max_len), beyond model.max_position={max_position}; set model.max_position to at "
            f"least {largest + 1}"
        )


# --------------------------------------------------------------------------- limits


def exact_range(n: int) -> tuple[int, int]:
    """[lo, hi) of the integers with exactly n digits; 1 digit includes 0."""
    return (0 if n == 1 else 10 ** (n - 1)), 10**n


def pair_space_size(n: int, sampling: str) -> int:
    """How many distinct pairs (a, b) the sampling rule of length n can produce."""
    lo, hi = exact_range(n)
    if sampling in ("below", "lengths"):  # lengths reaches every pair below 10^n
        return hi * hi
    if sampling == "ab":
        return (hi - lo) ** 2
    if sampling == "D":  # at least one operand has exactly n digits, both < 10^n
        return hi * hi - lo * lo
    raise ValueError(f"unknown sampling {sampling!r}")


def training_components(cfg: ArithmeticTask) -> list[tuple[int, float]]:
    """(digits, weight) of each component of the training mixture."""
    components = [(cfg.digits, 1.0 - cfg.mix_weight)]
    if cfg.mix_digits is not None and cfg.mix_weight > 0:
        components.append((cfg.mix_digits, cfg.mix_weight))
    return components


def split_by_weight(total: int, components: list[tuple[int, float]]) -> list[int]:
    """Split ``total`` examples over the mixture components by weight."""
    if len(components) == 1:
        return [total]
    mix = round(total * components[1][1])
    return [total - mix, mix]


def fixed_set_size(cfg: ArithmeticTask) -> tuple[int, str]:
    """Examples in the fixed training set, and the config field that sets it."""
    if cfg.train_size is not None:
        return cfg.train_size, f"task.train_size={cfg.train_size}"
    if cfg.train_fraction is None:
        raise ValueError("task.train_set=fixed needs task.train_size or task.train_fraction")
    total = round(cfg.train_fraction * pair_space_size(cfg.digits, cfg.sampling))
    return total, f"task.train_fraction={cfg.train_fraction}"


def check_supported(cfg: ArithmeticTask) -> None:
    """Reject configs this module cannot run, naming the field (called by the config's validation)."""
    if cfg.random_zero_pad and cfg.pad:
        raise ValueError(
            "task.random_zero_pad=true pads unpadded training operands with a random number of zeros; with "
            "task.pad=true every operand is already padded to task.width; set task.pad=false"
        )
    if cfg.index_hints and not cfg.pad:
        raise ValueError("task.index_hints=true is implemented for padded operands only; set task.pad=true")
    if cfg.index_hints and max(cfg.width, answer_width(cfg, cfg.width) // 2) > len(HINTS):
        raise ValueError(
            f"task.index_hints=true has {len(HINTS)} hint letters, fewer than the digits of this format "
            f"(task.width={cfg.width}, op={cfg.op}); lower task.width"
        )
    if not cfg.pad and not cfg.symbols:
        raise ValueError(
            "task.symbols=false with task.pad=false: unpadded fields need the '+'/'*' and '=' "
            "separators; set task.symbols=true or task.pad=true"
        )
    op, longest = operation(cfg.op), max(cfg.train_len, cfg.eval_max_len)
    largest_operand = 10**longest - 1
    if not op.digit_by_digit and cfg.modulus is None and op.apply(largest_operand, largest_operand) > INT64_MAX:
        raise ValueError(
            f"task.op={cfg.op} with operands of up to {longest} digits (task.digits / task.mix_digits / "
            f"task.eval_max_len) gives {op.result}s beyond int64; use at most {op.most_digits_within_int64()} "
            "digits, or set task.modulus"
        )
    if cfg.train_len > INT64_DIGITS:
        raise ValueError(
            f"training operands of up to {cfg.train_len} digits (task.digits / task.mix_digits) do not fit "
            f"int64; train on at most {INT64_DIGITS} digits (evaluation goes up to task.width <= 40)"
        )
    if longest > INT64_DIGITS and cfg.modulus is not None and cfg.modulus > 10**17:
        raise ValueError(
            f"task.modulus={cfg.modulus} with operands beyond {INT64_DIGITS} digits (task.eval_max_len) "
            "is reduced digit by digit, which needs task.modulus <= 10^17; lower it or task.eval_max_len"
        )
    if cfg.modulus is not None and op.apply(cfg.modulus - 1, cfg.modulus - 1) > INT64_MAX:  # f of two residues
        raise ValueError(
            f"task.modulus={cfg.modulus} is too large for int64 {op.result}s; use at most {op.largest_modulus}"
        )
    digits = answer_digits(cfg, cfg.train_len)
    for position in cfg.probes.positions or []:
        if not 0 <= position < digits:
            raise ValueError(
                f"task.probes.positions: {position} is not an answer digit of this format; answers of "
                f"{cfg.train_len}-digit operands have digits 0..{digits - 1} (0 = units), so probe those"
            )
    if cfg.train_set == "fixed":
        total, field = fixed_set_size(cfg)
        if total < 1:
            raise ValueError(f"{field} gives an empty training set; raise it")
        components = training_components(cfg)
        for i, ((n, _), size) in enumerate(zip(components, split_by_weight(total, components))):
            space = pair_space_size(n, cfg.sampling)
            if size > space // 2:
                share = f" (its task.mix_weight={cfg.mix_weight} share)" if i == 1 else ""
                raise ValueError(
                    f"{field} asks for {size} distinct {cfg.sampling} pairs of {n} digits{share}, more "
                    f"than half of the {space} possible pairs (a disjoint ID test set needs the rest); "
                    "lower task.train_size / task.train_fraction"
                )


# --------------------------------------------------------------------------- metrics


def summary_metrics(cfg: ArithmeticTask) -> set[str]:
    """The summary metrics (``<split>_<metric>``) a trial of this config reports: ``id_*``
    always, ``ood_*`` only when operands longer than the training length are evaluated
    (``task.eval_max_len > train_len``); ``chance`` only under a modulus."""
    splits = ["id"] + (["ood"] if cfg.eval_max_len > cfg.train_len else [])
    metrics = [m for m in METRICS if m != "chance" or cfg.modulus is not None]
    return {summary_metric(split, metric) for split in splits for metric in metrics}


def missing_metric_hint(cfg: ArithmeticTask, metric: str) -> str:
    """Why a config does not report ``metric``, and what would make it."""
    if metric.startswith("ood_") and cfg.eval_max_len <= cfg.train_len:
        return (
            f"task.eval_max_len={cfg.eval_max_len} evaluates no operand longer than the training "
            f"length {cfg.train_len}; raise task.eval_max_len (and task.width)"
        )
    if metric.endswith("_chance"):
        return "chance is reported only under a modulus; set task.modulus"
    return "the arithmetic family does not report it"
