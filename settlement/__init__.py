"""Business date, cut-over, settlement files and reconciliation."""
