"""Recording realised liquidations, open interest and funding from exchange streams (`cascade record`)."""
