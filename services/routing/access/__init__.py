"""Who is calling routing and what they may do: roles, API tokens, signed action links, email and the audit log."""
