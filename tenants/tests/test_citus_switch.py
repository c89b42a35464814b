"""Without DATABASE_CITUS the Citus commands refuse clearly (the cluster itself: tests/citus/)."""

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError


@pytest.mark.django_db
@pytest.mark.parametrize("command", [["tenant_move", "acme"], ["citus_distribute"]])
def test_citus_commands_refuse_on_one_postgresql(command, settings):
    settings.DATABASE_CITUS = False
    with pytest.raises(CommandError, match="DATABASE_CITUS is off"):
        call_command(*command)
