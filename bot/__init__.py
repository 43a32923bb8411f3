"""cascade's edge: config, data store and downloads, exchange gateway, risk, replay exchange, CLI."""
