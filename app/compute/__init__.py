"""The built-in compute inventory: servers and volumes whose disks live in the chunk store."""
