"""What fraud-ops teams watch: the alert feed and the ops dashboard."""
