"""The room of the sources other than the collector: what another protocol sends, recorded."""
