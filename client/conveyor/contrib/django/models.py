"""No models: conveyor's tables are its SQL schema. The module exists because
Django sends post_migrate (which upgrades the schema, see apps.py) only to
apps that have a models module."""
