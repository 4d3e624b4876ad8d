"""factory_boy factories shared by the test packages. Additive: add your own below."""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import formatdate, make_msgid

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from hisp.models import Address, AddressGrant, Domain, MailboxEntry, Message


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda o: f"{o.username}@personal.example")
    password = factory.django.Password("correct horse battery")


class DomainFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Domain
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"hisp{n}.example")


class AddressFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Address
        django_get_or_create = ("address",)

    domain = factory.SubFactory(DomainFactory)
    address = factory.LazyAttributeSequence(lambda o, n: f"person{n}@{o.domain.name}")
    display_name = factory.Sequence(lambda n: f"Person {n}")


class AddressGrantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = AddressGrant

    user = factory.SubFactory(UserFactory)
    address = factory.SubFactory(AddressFactory)
    role = AddressGrant.Role.OWNER


def mime_message(
    *, sender: str, to: list[str], subject: str = "Referral", text: str = "Please see the attached.",
    html: str | None = None, attachments: list[tuple[str, str, bytes]] = (),  # type: ignore[assignment]
) -> bytes:
    """A plain MIME message (the verified inner message of inbound mail)."""
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = ", ".join(to)
    mail["Subject"] = subject
    mail["Date"] = formatdate(localtime=False)
    mail["Message-ID"] = make_msgid(domain=sender.rsplit("@", 1)[-1])
    mail.set_content(text)
    if html is not None:
        mail.add_alternative(html, subtype="html")
    for filename, content_type, data in attachments:
        maintype, subtype = content_type.split("/", 1)
        mail.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return bytes(mail)


class MessageFactory(factory.django.DjangoModelFactory):
    """An inbound message as the pipeline leaves it: verified content, signer, anchor."""

    class Meta:
        model = Message

    class Params:
        sender = "dr.who@partner.example"
        to = factory.LazyFunction(lambda: ["alice@clinic.example"])
        text = "Please see the attached."
        attachments = ()
        html = None

    direction = Message.Direction.INBOUND
    state = Message.State.DELIVERED
    message_id = factory.Sequence(lambda n: f"<m{n}@partner.example>")
    envelope_from = factory.LazyAttribute(lambda o: o.sender)
    envelope_to = factory.LazyAttribute(lambda o: list(o.to))
    header_from = factory.LazyAttribute(lambda o: o.sender)
    header_to = factory.LazyAttribute(lambda o: list(o.to))
    subject = "Referral"
    raw = b"(the encrypted wire message)"
    content = factory.LazyAttribute(
        lambda o: mime_message(sender=o.sender, to=list(o.to), subject=o.subject, text=o.text,
                               html=o.html, attachments=list(o.attachments))
    )
    signer = factory.LazyAttribute(lambda o: o.sender)


class MailboxEntryFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = MailboxEntry

    address = factory.SubFactory(AddressFactory)
    message = factory.SubFactory(MessageFactory)
    folder = MailboxEntry.SystemFolder.INBOX
    sender = factory.LazyAttribute(lambda o: o.message.header_from)
    recipients = factory.LazyAttribute(lambda o: list(o.message.header_to))
    subject = factory.LazyAttribute(lambda o: o.message.subject)
    snippet = "Please see the attached."
    body_text = "Please see the attached."
    has_attachments = False
    received_at = factory.LazyFunction(timezone.now)
