import pytest


@pytest.fixture(autouse=True)
def _django_db_marker():
    """pytest-django's marker fixture, minus the wrapping transaction: a backup reads its organisation in a
    transaction of its own and a restore commits, so these tests write in autocommit in organisations of their own
    (dropped afterwards). The tests carry the django_db marker only so that pytest-django creates the database."""
