"""The daemon's HTTP side: metrics, health and the conflict review page."""
