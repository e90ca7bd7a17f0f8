"""Below every stage: settings, object storage and the one layout of every key, clock helpers, clients."""
