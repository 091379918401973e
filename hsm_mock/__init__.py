"""Payment cryptography and the mock HSM (PIN blocks, MACs, DUKPT, key blocks)."""
