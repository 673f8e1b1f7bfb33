"""Routing's use cases, one module each: assign (decide and record), clock (timers, breaches, the ladder),
actions (a rep's accept, reject, touch, disqualify, convert), roster (reps, teams, accounts, rules), erasure,
preview (simulate, backtest) and story (a lead's record); context and shared hold what they all read."""
