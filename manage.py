#!/usr/bin/env python
import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")
    from django.core.management import execute_from_command_line

    from core.audit import SERVING_COMMANDS, actor_for_command, actor_scope

    command = sys.argv[1] if len(sys.argv) > 1 else "help"
    if command in SERVING_COMMANDS:  # each request, socket and task there names its own actor
        execute_from_command_line(sys.argv)
        return
    # Whatever a command line changes (shell sessions included) is audited as that command and the OS user.
    with actor_scope(actor_for_command(command)):
        execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
