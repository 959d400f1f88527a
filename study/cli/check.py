"""``oodstudy check STUDY --store URI``: the study's claims (its spec's ``expect`` list)
checked against what the store holds, without training: one line per claim and cell,
reproduced / not reproduced / not measurable yet, the measured seed distribution beside
the published value.  The rows go to the store's ``claims`` table.  ``run`` and
``resume`` print the same lines at their end (:func:`print_claims`).
"""

from __future__ import annotations

from study.config import SweepSpec

# Exit code of `check` when a claim was measured and did not reproduce.
EXIT_NOT_REPRODUCED = 1


def add_check_command(sub) -> None:
    p = sub.add_parser("check", help="check a study's claims (its spec's expect list) against its store; no training")
    p.add_argument("study", help="the study's name")
    p.add_argument("--store", default="./results", help="results store URI (default ./results)")
    p.set_defaults(func=_cmd_check)


def study_claims(spec: SweepSpec, write: bool = True):
    """The claims table of ``spec``'s study as its store holds it now
    (:data:`analysis.claims.COLUMNS`), written to the store's ``claims`` table unless
    ``write`` is false (a report may read a store it cannot write)."""
    from analysis.claims import check_claims
    from analysis.load import structure_scores, study_frames
    from study.store import Store

    store = Store(spec.store, create=False)
    trials, final = study_frames(store, spec.name)
    probed = any(claim.table == "representations" for claim in spec.expect)
    structure = structure_scores(store, spec.name, final=True, trials_frame=trials) if probed else None
    table = check_claims(spec.expect, trials, final, spec.tune.mode, structure)
    if write:
        store.append("claims", table, study=spec.name, attempt=0)
    return table


def print_claims(spec: SweepSpec) -> None:
    """The claim lines and their tally; nothing when the spec states no claims."""
    from analysis.claims import claim_lines, tally

    if not spec.expect:
        return
    table = study_claims(spec)
    print()
    print(tally(table))
    print("\n".join(claim_lines(table)))


def _cmd_check(args) -> int:
    from analysis.claims import NOT_REPRODUCED, claim_lines, tally
    from study.store import Store, check_intact
    from study.tune.runner import read_spec_copy

    store = Store(args.store, create=False)  # a path that is not a store: one line, before anything else
    spec = read_spec_copy(args.study, args.store)
    if not spec.expect:
        print(
            f"study {spec.name} states no claims (its spec has no expect list); add one and run "
            f"`oodstudy check {spec.name} --store {args.store}` again: its store is re-read, nothing is trained"
        )
        return 0
    check_intact(store, spec.name)  # a study that lost a fragment would be checked as less than it is
    table = study_claims(spec)
    print(f"study {spec.name}: {tally(table)}")
    print("\n".join(claim_lines(table)))
    return EXIT_NOT_REPRODUCED if (table["verdict"] == NOT_REPRODUCED).any() else 0
