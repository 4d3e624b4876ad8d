"""The console's trusted roles, kept apart so no one person proofs, issues and audits.

CA practice (and DirectTrust accreditation after it) separates the registration officer who
proofs an identity from the certificate officer who issues and revokes, and gives auditors a
read-only view of the log. Each role is a django.contrib.auth Group with a fixed name, created
by migration 0002; a superuser holds every role. docs/console-roles.md lists what each allows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, Group
from django.db import models


class Role(models.TextChoices):
    # The values are the Group names; hisp/management/commands/staff.py repeats them (hisp may
    # not import the console) and tests/hisp/cli/test_staff.py holds the two lists equal.
    REGISTRATION = "registration", "Registration officer"
    CERTIFICATES = "certificates", "Certificate officer"
    OPERATIONS = "operations", "Mail operator"
    AUDIT = "audit", "Auditor"


@dataclass(frozen=True)
class StaffRoles:
    """The roles a signed-in staff member holds, as templates test them:
    ``{% if request.staff_roles.certificates %}``."""

    registration: bool = False
    certificates: bool = False
    operations: bool = False
    audit: bool = False

    @property
    def any(self) -> bool:
        return self.registration or self.certificates or self.operations or self.audit

    @property
    def queues(self) -> bool:
        """The message and delivery queues show who wrote to whom: operators and auditors."""
        return self.operations or self.audit

    def holds(self, role: Role) -> bool:
        return bool(getattr(self, role.value))


def roles_of(user: AbstractBaseUser | AnonymousUser) -> StaffRoles:
    if not (user.is_authenticated and user.is_active and getattr(user, "is_staff", False)):
        return StaffRoles()
    if getattr(user, "is_superuser", False):
        return StaffRoles(**{role.value: True for role in Role})
    names = set(
        Group.objects.filter(user=user, name__in=Role.values).values_list("name", flat=True)
    )
    return StaffRoles(**{name: True for name in names})


def role_groups(roles: Iterable[Role]) -> list[Group]:
    """The Groups of ``roles``, created if missing (a database flushed by a test, or one whose
    groups an administrator deleted by hand, still gets the right names back)."""
    return [Group.objects.get_or_create(name=Role(role).value)[0] for role in roles]
