"""Key management: the KeyProvider port (`port`), its local adapter (`local`), tables and rules."""
