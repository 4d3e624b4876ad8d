from __future__ import annotations

from django.urls import path

from webmail.views import account, auth, compose, invitation, mailbox, message

app_name = "webmail"
urlpatterns = [
    path("", mailbox.inbox, name="inbox"),
    # Sign-in and security
    path("login/", auth.SignInView.as_view(), name="login"),
    path("login/code/", auth.otp_verify, name="otp-verify"),
    path("login/enrol/", auth.otp_enrol, name="otp-enrol"),
    path("login/key/", auth.key_sign_in, name="key-sign-in"),
    path("logout/", auth.sign_out, name="logout"),
    path("logout/idle/", auth.idle_sign_out, name="idle-logout"),
    path("keep-alive/", auth.keep_alive, name="keep-alive"),
    # Patient invitations (issued in the console); set-up/ first: the token pattern matches it.
    path("invitation/set-up/", invitation.set_up, name="invitation-set-up"),
    path("invitation/<str:token>/", invitation.invitation_link, name="invitation"),
    path("account/", account.account, name="account"),
    path("account/password/", auth.password_change, name="password-change"),
    path("account/keys/add/", account.security_key_add, name="security-key-add"),
    path("account/keys/<int:key_id>/remove/", account.security_key_remove,
         name="security-key-remove"),
    path("account/app-passwords/", auth.app_passwords, name="app-passwords"),
    path("account/app-passwords/<int:app_password_id>/delete/", auth.app_password_delete,
         name="app-password-delete"),
    path("account/contacts/", account.contacts, name="contacts"),
    path("account/contacts/<int:contact_id>/delete/", account.contact_delete,
         name="contact-delete"),
    # Mailboxes and folders
    path("a/<int:address_id>/search/", mailbox.search_view, name="search"),
    path("a/<int:address_id>/bulk/", mailbox.bulk, name="bulk"),
    path("a/<int:address_id>/folders/", mailbox.folders, name="folders"),
    path("a/<int:address_id>/folders/<int:folder_id>/", mailbox.user_folder, name="user-folder"),
    path("a/<int:address_id>/trash/empty/", mailbox.empty_trash, name="empty-trash"),
    path("a/<int:address_id>/sharing/", account.delegates, name="delegates"),
    path("a/<int:address_id>/<str:folder>/", mailbox.folder, name="folder"),
    path("folders/<int:folder_id>/rename/", mailbox.folder_rename, name="folder-rename"),
    path("folders/<int:folder_id>/delete/", mailbox.folder_delete, name="folder-delete"),
    path("sharing/<int:grant_id>/revoke/", account.delegate_revoke, name="delegate-revoke"),
    # Messages
    path("m/<int:entry_id>/", message.message_detail, name="message-detail"),
    path("m/<int:entry_id>/action/", message.message_action, name="message-action"),
    path("m/<int:entry_id>/text/", message.text_download, name="message-text"),
    path("m/<int:entry_id>/attachments/<int:index>/", message.attachment_download,
         name="attachment-download"),
    path("m/<int:entry_id>/attachments/<int:index>/view/", message.attachment_view,
         name="attachment-view"),
    path("m/<int:entry_id>/attachments/<int:index>/xdm/<int:member>/", message.xdm_document,
         name="xdm-document"),
    # Compose
    path("compose/", compose.compose, name="compose"),
    path("compose/recipients/", compose.recipient_suggestions, name="recipient-suggestions"),
    path("compose/certificates/", compose.certificate_check, name="certificate-check"),
    path("compose/subject/", compose.subject_check, name="subject-check"),
    path("compose/draft/", compose.draft_save, name="draft-save"),
    path("drafts/<int:draft_id>/delete/", compose.draft_delete, name="draft-delete"),
]
