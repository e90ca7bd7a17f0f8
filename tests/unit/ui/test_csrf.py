"""Form tokens: bound to the user and to the login credential, unforgeable without the server's secret."""

from __future__ import annotations

from feedloop.ops.ui.csrf import token_for

SECRET = b"s" * 32


def test_the_same_login_gets_the_same_token():
    assert token_for(SECRET, user_id="admin", login="jwt-a") == token_for(SECRET, user_id="admin", login="jwt-a")


def test_another_login_of_the_same_user_gets_another_token():
    assert token_for(SECRET, user_id="admin", login="jwt-a") != token_for(SECRET, user_id="admin", login="jwt-b")


def test_another_user_gets_another_token():
    assert token_for(SECRET, user_id="admin", login="jwt-a") != token_for(SECRET, user_id="viewer", login="jwt-a")


def test_another_secret_gives_another_token_and_the_login_does_not_show():
    token = token_for(SECRET, user_id="admin", login="jwt-a")
    assert token != token_for(b"t" * 32, user_id="admin", login="jwt-a")
    assert "jwt-a" not in token and len(token) == 64


def test_the_user_and_login_cannot_be_shifted_into_each_other():
    assert token_for(SECRET, user_id="ad", login="min") != token_for(SECRET, user_id="admin", login="")
