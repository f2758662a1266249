"""The pipeline: source transactions -> versioned events in the state store -> targets -> checkpoint."""
