"""Jobs: the service (create, cancel, retry), the workers and the reaper."""
