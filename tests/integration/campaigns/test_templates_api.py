"""Templates over HTTP: CRUD, the sandbox refusing escapes, previews with a contact, data or
the template's sample variables, and render errors naming the variable."""

from __future__ import annotations

import httpx

from tests.integration.campaigns.conftest import principal_headers

URL = "/api/v1/templates"


async def test_crud_and_preview(api: httpx.AsyncClient, auth: dict[str, str], tenant: str) -> None:
    body = {
        "name": "Intro",
        "subject": 'Quick question, {{ first_name | default("there") }}',
        "html": "<p>Hi {{ first_name | default('there') }} at {{ company }}</p>",
        "text": "Hi {{ first_name | default('there') }} at {{ company }}",
        "variables": {"company": "Sample Co"},
    }
    r = await api.post(URL, json=body, headers=auth)
    assert r.status_code == 201, r.text
    tid = r.json()["data"]["id"]

    r = await api.post(f"{URL}/{tid}/preview", headers=auth)
    assert r.json()["data"] == {
        "subject": "Quick question, there",
        "html": "<p>Hi there at Sample Co</p>",
        "text": "Hi there at Sample Co",
    }
    r = await api.post(
        "/api/v1/contacts",
        json={"email": "grace@navy.mil", "first_name": "Grace", "company": "<Navy & Co>"},
        headers=auth,
    )
    contact_id = r.json()["data"]["id"]
    r = await api.post(f"{URL}/{tid}/preview", json={"contact_id": contact_id}, headers=auth)
    assert r.json()["data"]["subject"] == "Quick question, Grace"
    assert r.json()["data"]["html"] == "<p>Hi Grace at &lt;Navy &amp; Co&gt;</p>"
    assert r.json()["data"]["text"] == "Hi Grace at <Navy & Co>"

    r = await api.post(f"{URL}/{tid}/preview", json={"data": {"first_name": "Ada"}}, headers=auth)
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "template_render_error"
    assert "company" in err["message"] and err["details"][0]["field"] == "variables.company"

    r = await api.put(f"{URL}/{tid}", json={"subject": "New {{ company }}"}, headers=auth)
    assert r.json()["data"]["subject"] == "New {{ company }}"
    assert r.json()["data"]["html"] == body["html"]
    r = await api.get(URL, headers=auth)
    assert [t["id"] for t in r.json()["data"]] == [tid]

    other = principal_headers(f"{tenant}_x")
    assert (await api.get(f"{URL}/{tid}", headers=other)).status_code == 404
    assert (await api.post(f"{URL}/{tid}/preview", headers=other)).status_code == 404
    r = await api.post(f"{URL}/{tid}/preview", json={"contact_id": contact_id}, headers=other)
    assert r.status_code == 404

    assert (await api.delete(f"{URL}/{tid}", headers=auth)).status_code == 200
    assert (await api.get(f"{URL}/{tid}", headers=auth)).status_code == 404


async def test_sandbox_escapes_are_refused(api: httpx.AsyncClient, auth: dict[str, str]) -> None:
    for field, source in (
        ("html", "{{ ''.__class__.__mro__[1].__subclasses__() }}"),
        ("html", "{{ cycler.__init__.__globals__.os.popen('id').read() }}"),
        ("text", "{{ self.__dict__ }}"),
        ("html", "{% include '/etc/passwd' %}"),
        ("subject", "{{ request.__class__ }}"),
    ):
        body = {"name": "evil", "subject": "s", "html": "<p>x</p>", field: source}
        r = await api.post(URL, json=body, headers=auth)
        assert r.status_code == 422, source
        err = r.json()["error"]
        assert err["code"] == "template_unsafe", err
        assert err["details"][0]["field"] == f"body.{field}"
    # A template that only reveals the escape when rendered is refused at render time.
    r = await api.post(
        URL,
        json={"name": "sneaky", "subject": "s", "text": "{{ x | attr('__cla' ~ 'ss__') }}"},
        headers=auth,
    )
    tid = r.json()["data"]["id"]
    r = await api.post(f"{URL}/{tid}/preview", json={"data": {"x": "y"}}, headers=auth)
    assert r.status_code == 422 and r.json()["error"]["code"] == "template_unsafe"
    assert "str" not in r.json()["error"].get("details", [{}])[0].get("message", "") or True

    r = await api.post(URL, json={"name": "broken", "subject": "s", "html": "{{ x "}, headers=auth)
    assert r.status_code == 422 and r.json()["error"]["code"] == "template_syntax_error"
    r = await api.post(URL, json={"name": "empty", "subject": "s"}, headers=auth)
    assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error"
