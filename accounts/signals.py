"""Signals through which apps above accounts take part in a member's personal data (architecture.md, layers).

- `user_export_collect(sender, principal)`: each receiver returns a dict of sections added to the principal's data
  export, read in the principal's organisation (its schema is the current one).
- `member_departing(sender, tenant, user)`: sent inside each organisation's schema, in the account deletion's
  transaction, for every organisation the user leaves; receivers apply the organisation's policy to what the user
  leaves there.
"""

from django.dispatch import Signal

user_export_collect = Signal()
member_departing = Signal()
