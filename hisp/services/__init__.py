"""Every write with a side effect (state change, audit event, queued task) goes through here."""
