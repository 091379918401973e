"""The finance bureau's non-tax revenue system: payment notices, the bureau's answers, and its TCP front."""
