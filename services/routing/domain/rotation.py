"""Smooth weighted round robin (the nginx algorithm) with state the caller persists per team.

State is {rep_id: current_weight}. On each pick every *eligible* rep adds its weight to its counter,
the highest counter wins and gives back the total eligible weight. Over any stretch where the eligible
set is stable, each rep wins weight/total of the picks, spread out rather than in bursts.

Changes to the team do not reset anyone else's turn:
- a new rep starts at 0, the neutral value (the counters of a stable set sum to 0);
- a rep who leaves the team, leaves the company, goes away or out of office is dropped from the state,
  so on return it starts again at 0: no backlog of "owed" leads, no flood;
- a rep merely skipped for one lead (busy, wrong language, outside hours) keeps its counter frozen:
  it neither accumulates while skipped nor loses its place;
- every counter is clamped to [-T, T], T the team's total weight, which a stable rotation never leaves,
  so stale or hand-edited state can cost or grant at most about one turn.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def weighted_pick(weights: Mapping[str, int], state: Mapping[str, int]) -> tuple[str, dict[str, int]]:
    """One nginx step over the reps in `weights`; returns the winner and the new state (others unchanged)."""
    if not weights:
        raise ValueError("cannot pick from no reps")
    new_state = {rep_id: int(value) for rep_id, value in state.items()}
    total = sum(weights.values())
    winner: str | None = None
    # Sorted ids make ties (e.g. a fresh team) resolve the same way whatever order the caller lists reps in.
    for rep_id in sorted(weights):
        new_state[rep_id] = new_state.get(rep_id, 0) + weights[rep_id]
        if winner is None or new_state[rep_id] > new_state[winner]:
            winner = rep_id
    assert winner is not None
    new_state[winner] -= total
    return winner, new_state


def settle(state: Mapping[str, int], members: Mapping[str, int]) -> dict[str, int]:
    """Keep only present members' counters (by their weights) and clamp each to [-T, T]."""
    bound = sum(members.values())
    low = -bound
    # Comparisons, not min/max calls: every lead routed settles its team's state twice.
    return {
        rep_id: bound if value > bound else low if value < low else value
        for rep_id, value in state.items()
        if rep_id in members
    }


def rotate(
    eligible: Mapping[str, int], present: Mapping[str, int], state: Mapping[str, int]
) -> tuple[str, dict[str, int]]:
    """Pick among `eligible` (id -> weight) and return the state to persist for the team's `present` reps."""
    # Present reps' own weights set the clamp bound even when this pick uses round-robin weights of 1.
    members = {**eligible, **present}
    winner, new_state = weighted_pick(eligible, settle(state, members))
    return winner, settle(new_state, members)


def simulate(
    weights: Mapping[str, int], picks: int, state: Mapping[str, int] | None = None
) -> tuple[dict[str, int], dict[str, int]]:
    """Run `picks` rotations over a fixed set; returns (wins per rep, final state). For tests and tooling."""
    wins = dict.fromkeys(weights, 0)
    current = dict(state or {})
    for _ in range(picks):
        winner, current = rotate(weights, weights, current)
        wins[winner] += 1
    return wins, current


def neutral_state(rep_ids: Iterable[str]) -> dict[str, int]:
    """A fresh rotation: everyone at the neutral value 0."""
    return dict.fromkeys(rep_ids, 0)
