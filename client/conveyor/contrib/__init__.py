"""Integrations of conveyor with frameworks; each is an optional extra
(``pip install 'conveyor[django]'``) and imports its framework only when used."""
