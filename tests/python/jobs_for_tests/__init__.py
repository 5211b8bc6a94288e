"""Job modules that the poison-job and chaos tests start `conveyor worker` with.

They are imported by worker subprocesses (PYTHONPATH=tests/python), not by
pytest itself.
"""
