"""Local services for development and tests: brokers, clusters, PostgreSQL, Connect."""
