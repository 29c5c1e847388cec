"""C2PA Content Credentials (img2img_cli/credentials.py) with c2pa-python and throwaway certificates.

Each test makes its certificates with ``cryptography``: a self-signed root CA and an
end-entity signing certificate it issues (critical Key Usage digitalSignature, Extended Key
Usage emailProtection), the profile c2pa-rs accepts. c2pa does not trust that root, so a
manifest read with default settings is ``Valid`` with the one status
``signingCredential.untrusted``; given the root as a trust anchor it is ``Trusted``.
No time-stamp authority: nothing here touches the network.
"""

from __future__ import annotations

import datetime
import json
import os
import threading
from pathlib import Path

import pytest
from PIL import Image

c2pa = pytest.importorskip("c2pa")
pytest.importorskip("cryptography")

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402

from img2img_cli import __version__  # noqa: E402
from img2img_cli.credentials import Signing, read_manifest, sign  # noqa: E402
from img2img_cli.errors import OutputError, UsageError  # noqa: E402
from img2img_cli.metadata import read_infotext, write_image  # noqa: E402
from img2img_cli.provenance import read_source_type, xmp_packet  # noqa: E402

from .conftest import EXAMPLES  # noqa: E402

IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"
SOFTWARE = f"img2img-cli {__version__}"
INFOTEXT = "a cat, watercolor\nNegative prompt: blurry\nSteps: 2, Sampler: PNDM, CFG scale: 7.5, Seed: 1, Size: 64x40"
EMAIL = ExtendedKeyUsageOID.EMAIL_PROTECTION
NOW = datetime.datetime.now(datetime.timezone.utc)


# --- throwaway certificates -------------------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "img2img-cli tests")])


def _ku(*, sign: bool = False, ca: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=sign, content_commitment=False, key_encipherment=False, data_encipherment=False,
        key_agreement=False, key_cert_sign=ca, crl_sign=ca, encipher_only=False, decipher_only=False,
    )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key, fmt=serialization.PrivateFormat.PKCS8, password: bytes | None = None) -> bytes:
    enc = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, fmt, enc)


def make_root():
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(_name("Test Root CA")).issuer_name(_name("Test Root CA"))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=1)).not_valid_after(NOW + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_ku(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_leaf(root, key, *, eku=(EMAIL,), self_signed: bool = False, cn: str = "Test Signer", days=(-1, 30)) -> x509.Certificate:
    """An end-entity certificate for ``key`` issued by ``root`` (or by itself), valid ``days`` from now."""
    root_key, root_cert = root
    issuer_key, issuer_name = (key, _name(cn)) if self_signed else (root_key, root_cert.subject)
    b = (
        x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(issuer_name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(NOW + datetime.timedelta(days=days[0])).not_valid_after(NOW + datetime.timedelta(days=days[1]))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_ku(sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if eku:
        b = b.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    if not self_signed:
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False)
    return b.sign(issuer_key, None if isinstance(issuer_key, ed25519.Ed25519PrivateKey) else hashes.SHA256())


@pytest.fixture(scope="module")
def root():
    return make_root()


@pytest.fixture(scope="module")
def creds(root, tmp_path_factory):
    """``(cert.pem, key.pem, root.pem)``: an ES256 signing certificate + the root, its key, the root alone."""
    d = tmp_path_factory.mktemp("creds")
    key = ec.generate_private_key(ec.SECP256R1())
    cert, keyfile, rootfile = d / "cert.pem", d / "key.pem", d / "root.pem"
    cert.write_bytes(_pem(make_leaf(root, key)) + _pem(root[1]))
    keyfile.write_bytes(_key_pem(key))
    rootfile.write_bytes(_pem(root[1]))
    return cert, keyfile, rootfile


@pytest.fixture(scope="module")
def signing(creds) -> Signing:
    return Signing.load(creds[0], creds[1])


# --- helpers ----------------------------------------------------------------------------------


def labelled_image(path: Path, fmt: str) -> Path:
    """An output as the runner writes it: infotext + XMP digital source type, mode 0o640."""
    with Image.open(EXAMPLES / "chelsea.png") as im:
        image = im.convert("RGB").resize((96, 64))
    write_image(image, path, fmt, INFOTEXT, xmp=xmp_packet("trainedAlgorithmicMedia"))
    os.chmod(path, 0o640)
    return path


def manifest_of(path: Path, context=None) -> tuple[dict, dict, str]:
    """(the whole c2pa JSON, the active manifest, the validation state) via c2pa's Reader."""
    with c2pa.Reader(str(path), context=context) as reader:
        data = json.loads(reader.json())
        state = reader.get_validation_state()
    return data, data["manifests"][data["active_manifest"]], state


def actions_of(active: dict) -> list[dict]:
    [assertion] = [a for a in active["assertions"] if a["label"].startswith("c2pa.actions")]
    assert assertion["label"] == "c2pa.actions.v2"
    return assertion["data"]["actions"]


def trusting(root_pem: Path):
    return c2pa.Context(c2pa.Settings.from_dict({"trust": {"trust_anchors": root_pem.read_text()}}))


def temp_leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".img2img-")]


# --- signing ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["png", "jpg", "webp"])
def test_sign_embeds_a_valid_manifest_and_keeps_metadata_and_mode(tmp_path, fmt, signing, creds):
    out = labelled_image(tmp_path / f"out.{fmt}", fmt)
    sign(signing, out, fmt, action="c2pa.created", source_type="trainedAlgorithmicMedia",
         ingredient=EXAMPLES / "chelsea.png", software=SOFTWARE)

    data, active, state = manifest_of(out)
    assert active["claim_generator_info"][0]["name"] == "img2img-cli"
    assert active["claim_generator_info"][0]["version"] == __version__
    [action] = actions_of(active)
    assert action["action"] == "c2pa.created"
    assert action["digitalSourceType"] == IPTC + "trainedAlgorithmicMedia"
    assert action["softwareAgent"] == {"name": "img2img-cli", "version": __version__}
    [ingredient] = active["ingredients"]
    assert ingredient["title"] == "chelsea.png"
    assert ingredient["format"] == "image/png"
    assert ingredient["relationship"] == "inputTo"
    assert len(action["parameters"]["ingredients"]) == 1  # the action links the source image
    # Our root is not on c2pa's trust list: the manifest is valid, its signer untrusted.
    assert state == "Valid"
    assert [s["code"] for s in data["validation_status"]] == ["signingCredential.untrusted"]
    assert data["validation_results"]["activeManifest"]["failure"] == data["validation_status"]
    with trusting(creds[2]) as ctx:
        data, active, state = manifest_of(out, ctx)
    assert state == "Trusted"
    assert not data.get("validation_status")

    assert read_infotext(out) == INFOTEXT
    assert read_source_type(out) == "trainedAlgorithmicMedia"
    assert os.stat(out).st_mode & 0o777 == 0o640
    assert temp_leftovers(tmp_path) == []


def test_edited_opens_the_source_as_parent_then_edits(tmp_path, signing):
    out = labelled_image(tmp_path / "out.png", "png")
    sign(signing, out, "png", action="c2pa.edited", source_type="compositeWithTrainedAlgorithmicMedia",
         ingredient=EXAMPLES / "rocket.jpg", software=SOFTWARE)
    data, active, state = manifest_of(out)
    assert state == "Valid"
    opened, edited = actions_of(active)  # C2PA 2.x: the first action must be created or opened
    assert opened["action"] == "c2pa.opened"
    assert len(opened["parameters"]["ingredients"]) == 1
    assert edited["action"] == "c2pa.edited"
    assert edited["digitalSourceType"] == IPTC + "compositeWithTrainedAlgorithmicMedia"
    assert edited["softwareAgent"] == {"name": "img2img-cli", "version": __version__}
    [ingredient] = active["ingredients"]
    assert (ingredient["title"], ingredient["format"], ingredient["relationship"]) == ("rocket.jpg", "image/jpeg", "parentOf")


@pytest.mark.parametrize("ext,pil_format,mime", [("bmp", "BMP", "image/bmp"), ("ppm", "PPM", "image/x-portable-pixmap")])
def test_source_c2pa_cannot_read_is_described_by_title_and_format(tmp_path, signing, ext, pil_format, mime):
    src = tmp_path / f"source.{ext}"
    Image.new("RGB", (32, 32), (10, 200, 30)).save(src, pil_format)
    out = labelled_image(tmp_path / "out.png", "png")
    sign(signing, out, "png", action="c2pa.created", source_type="trainedAlgorithmicMedia", ingredient=src, software=SOFTWARE)
    _, active, state = manifest_of(out)
    assert state == "Valid"
    [ingredient] = active["ingredients"]
    assert ingredient["title"] == src.name
    assert ingredient["relationship"] == "inputTo"
    assert ingredient["format"] == mime


def test_signed_source_keeps_its_own_manifest_as_ingredient(tmp_path, signing):
    src = labelled_image(tmp_path / "source.jpg", "jpg")
    sign(signing, src, "jpg", action="c2pa.created", source_type="trainedAlgorithmicMedia",
         ingredient=EXAMPLES / "chelsea.png", software=SOFTWARE)
    out = labelled_image(tmp_path / "out.webp", "webp")
    sign(signing, out, "webp", action="c2pa.created", source_type="trainedAlgorithmicMedia", ingredient=src, software=SOFTWARE)
    data, active, state = manifest_of(out)
    assert state == "Valid"
    [ingredient] = active["ingredients"]
    assert ingredient["title"] == "source.jpg"
    assert ingredient.get("active_manifest") in data["manifests"]  # provenance chain: out <- source.jpg <- chelsea.png
    assert len(data["manifests"]) == 2


def test_name_sets_the_title_and_errors_name_the_file(tmp_path, signing):
    out = labelled_image(tmp_path / "tmp-name.png", "png")
    sign(signing, out, "png", action="c2pa.created", source_type="trainedAlgorithmicMedia",
         ingredient=EXAMPLES / "chelsea.png", software=SOFTWARE, name="results/cat.png")
    _, active, _ = manifest_of(out)
    assert active["title"] == "cat.png"

    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(OutputError) as e:
        sign(signing, bad, "png", action="c2pa.created", source_type="trainedAlgorithmicMedia",
             ingredient=EXAMPLES / "chelsea.png", software=SOFTWARE)
    message = str(e.value)
    assert message.startswith(f"{bad}: cannot sign C2PA manifest (") and "\n" not in message
    assert bad.read_bytes() == b"not a png at all"  # untouched
    with pytest.raises(OutputError, match=r"^results/x\.png: cannot sign C2PA manifest \("):
        sign(signing, tmp_path / "missing.png", "png", action="c2pa.created", source_type="trainedAlgorithmicMedia",
             ingredient=EXAMPLES / "chelsea.png", software=SOFTWARE, name="results/x.png")
    assert temp_leftovers(tmp_path) == []


def test_signing_in_other_threads(tmp_path, signing):
    """A Signing loaded in one thread signs in others (the runner's writer thread), concurrently too."""
    paths = [labelled_image(tmp_path / f"out{i}.png", "png") for i in range(4)]
    errors = []

    def work(path):
        try:
            sign(signing, path, "png", action="c2pa.created", source_type="trainedAlgorithmicMedia",
                 ingredient=EXAMPLES / "coffee.png", software=SOFTWARE)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(p,)) for p in paths]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [read_manifest(p)["validation"] for p in paths] == ["valid"] * 4


# --- read_manifest ----------------------------------------------------------------------------


def test_read_manifest(tmp_path, signing, creds):
    out = labelled_image(tmp_path / "out.jpg", "jpg")
    assert read_manifest(out) is None  # unsigned
    sign(signing, out, "jpg", action="c2pa.created", source_type="trainedAlgorithmicMedia",
         ingredient=EXAMPLES / "chelsea.png", software=SOFTWARE)
    assert read_manifest(out) == {
        "claim_generator": SOFTWARE,
        "actions": ["c2pa.created"],
        "digital_source_type": "trainedAlgorithmicMedia",
        "validation": "valid",
        "trusted": False,
        "signer": "Test Signer",
        "ingredients": ["chelsea.png"],
    }
    assert read_manifest(out, trust_anchors=creds[2].read_bytes())["trusted"] is True

    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    assert read_manifest(garbage) is None
    assert read_manifest(tmp_path / "missing.png") is None
    assert read_manifest(tmp_path) is None
    assert read_manifest(EXAMPLES / "chelsea.png") is None


def test_read_manifest_reports_a_changed_image(tmp_path, signing):
    out = labelled_image(tmp_path / "out.png", "png")
    sign(signing, out, "png", action="c2pa.created", source_type="trainedAlgorithmicMedia",
         ingredient=EXAMPLES / "chelsea.png", software=SOFTWARE)
    data = bytearray(out.read_bytes())
    i = data.index(b"IDAT") + 20
    data[i] ^= 0xFF
    out.write_bytes(bytes(data))
    found = read_manifest(out)
    assert found is not None and found["actions"] == ["c2pa.created"]
    assert found["validation"] == "assertion.dataHash.mismatch"


def test_without_c2pa_installed(monkeypatch, tmp_path, creds, signing):
    out = labelled_image(tmp_path / "out.png", "png")
    sign(signing, out, "png", action="c2pa.created", source_type="trainedAlgorithmicMedia",
         ingredient=EXAMPLES / "chelsea.png", software=SOFTWARE)
    monkeypatch.setitem(__import__("sys").modules, "c2pa", None)  # import c2pa -> ImportError
    assert read_manifest(out) is None
    with pytest.raises(UsageError, match=r"^--c2pa-cert: .*pip install c2pa-python"):
        Signing.load(creds[0], creds[1])


# --- Signing.load -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make_key,alg",
    [
        (lambda: ec.generate_private_key(ec.SECP256R1()), "es256"),
        (lambda: ec.generate_private_key(ec.SECP384R1()), "es384"),
        (lambda: ec.generate_private_key(ec.SECP521R1()), "es512"),
        (lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), "ps256"),
        (ed25519.Ed25519PrivateKey.generate, "ed25519"),
    ],
    ids=["p256", "p384", "p521", "rsa2048", "ed25519"],
)
def test_load_picks_the_algorithm_from_the_key(tmp_path, root, make_key, alg):
    key = make_key()
    cert, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(_pem(make_leaf(root, key)) + _pem(root[1]))
    # SEC1 / PKCS#1 ("EC PRIVATE KEY", "RSA PRIVATE KEY") files too: c2pa-rs reads only PKCS#8.
    traditional = not isinstance(key, ed25519.Ed25519PrivateKey)
    keyfile.write_bytes(_key_pem(key, serialization.PrivateFormat.TraditionalOpenSSL if traditional else serialization.PrivateFormat.PKCS8))
    signing = Signing.load(cert, keyfile)
    assert signing.alg == alg
    out = labelled_image(tmp_path / "out.png", "png")
    sign(signing, out, "png", action="c2pa.created", source_type="trainedAlgorithmicMedia",
         ingredient=EXAMPLES / "chelsea.png", software=SOFTWARE)
    assert read_manifest(out)["validation"] == "valid"


def _load_error(cert: Path, key: Path) -> str:
    with pytest.raises(UsageError) as e:
        Signing.load(cert, key)
    message = str(e.value)
    assert "\n" not in message
    return message


def test_load_errors_name_the_flag_and_file(tmp_path, creds, root):
    cert, key, _ = creds
    missing = tmp_path / "missing.pem"
    assert _load_error(missing, key).startswith(f"--c2pa-cert {missing}: cannot read (No such file or directory)")
    assert _load_error(cert, missing).startswith(f"--c2pa-key {missing}: cannot read")

    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n")
    assert _load_error(garbage, key) == f"--c2pa-cert {garbage}: not a PEM certificate chain (-----BEGIN CERTIFICATE-----)"
    assert _load_error(key, key).startswith(f"--c2pa-cert {key}: not a PEM certificate chain")  # a key, not a certificate
    assert _load_error(cert, garbage).startswith(f"--c2pa-key {garbage}: not a PEM private key")
    assert _load_error(cert, cert).startswith(f"--c2pa-key {cert}: not a PEM private key")  # the cert twice

    other = tmp_path / "other.pem"
    other.write_bytes(_key_pem(ec.generate_private_key(ec.SECP256R1())))
    assert _load_error(cert, other) == (
        f"--c2pa-key {other} does not match the certificate in --c2pa-cert {cert} "
        "(the signing certificate must come first in the file)"
    )
    backwards = tmp_path / "backwards.pem"  # root first
    backwards.write_bytes(cert.read_bytes().split(b"-----END CERTIFICATE-----\n", 1)[1] + cert.read_bytes())
    assert "does not match" in _load_error(backwards, key)

    encrypted = tmp_path / "encrypted.pem"
    k = ec.generate_private_key(ec.SECP256R1())
    encrypted.write_bytes(_key_pem(k, password=b"secret"))
    assert _load_error(cert, encrypted).startswith(f"--c2pa-key {encrypted}: the private key is encrypted")

    expired = tmp_path / "expired.pem"
    k = serialization.load_pem_private_key(key.read_bytes(), None)
    expired.write_bytes(_pem(make_leaf(root, k, days=(-30, -2))) + _pem(root[1]))
    assert _load_error(expired, key).startswith(f"--c2pa-cert {expired}: the signing certificate is not valid now (valid from ")

    k1 = tmp_path / "k1.pem"
    k1.write_bytes(_key_pem(ec.generate_private_key(ec.SECP256K1())))
    assert _load_error(cert, k1).startswith(f"--c2pa-key {k1}: unsupported key type EC secp256k1; C2PA signs with")


@pytest.mark.parametrize(
    "kind",
    ["self-signed", "no EKU", "serverAuth EKU", "the root CA"],
)
def test_load_rejects_certificates_c2pa_refuses(tmp_path, root, kind):
    key = ec.generate_private_key(ec.SECP256R1())
    if kind == "self-signed":
        leaf = make_leaf(root, key, self_signed=True)
    elif kind == "no EKU":
        leaf = make_leaf(root, key, eku=())
    elif kind == "serverAuth EKU":
        leaf = make_leaf(root, key, eku=(ExtendedKeyUsageOID.SERVER_AUTH,))
    else:
        key, leaf = root
    cert, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(_pem(leaf))
    keyfile.write_bytes(_key_pem(key))
    message = _load_error(cert, keyfile)
    assert message.startswith(f"--c2pa-cert {cert}: rejected by C2PA (")
    assert message.endswith("Extended Key Usage emailProtection, first in the file and followed by its intermediates")


def test_signing_does_not_print_secrets(creds, signing):
    assert "PRIVATE" not in repr(signing) and "CERTIFICATE" not in repr(signing)


# --- end to end -------------------------------------------------------------------------------


def test_cli_signs_outputs_only_with_a_certificate(tmp_path, creds, monkeypatch):
    from typer.testing import CliRunner

    from img2img_cli.cli import app

    runner = CliRunner()
    cert, key, root_pem = creds
    signed, plain, by_env = tmp_path / "signed.png", tmp_path / "plain.png", tmp_path / "env.jpg"
    fast = ["--model", "tiny", "--steps", "2", "--seed", "1"]

    r = runner.invoke(app, ["run", str(EXAMPLES / "chelsea.png"), *fast, "--c2pa-cert", str(cert), "--c2pa-key", str(key), "-o", str(signed)])
    assert r.exit_code == 0, r.stderr
    found = read_manifest(signed, trust_anchors=root_pem.read_bytes())
    assert found["actions"] == ["c2pa.created"]
    assert found["claim_generator"] == SOFTWARE
    assert found["digital_source_type"] == "trainedAlgorithmicMedia"
    assert found["ingredients"] == ["chelsea.png"]
    assert (found["validation"], found["trusted"]) == ("valid", True)
    assert "Steps: 2" in read_infotext(signed)
    assert read_source_type(signed) == "trainedAlgorithmicMedia"
    assert temp_leftovers(tmp_path) == []
    r = runner.invoke(app, ["info", str(signed)])  # what a user sees of it
    assert r.exit_code == 0, r.stderr
    assert "Digital source type: trainedAlgorithmicMedia" in r.stdout
    assert f"C2PA: {SOFTWARE}; actions: c2pa.created; valid" in r.stdout
    r = runner.invoke(app, ["info", str(signed), "--json"])
    assert json.loads(r.stdout)["c2pa"]["actions"] == ["c2pa.created"]

    r = runner.invoke(app, ["run", str(EXAMPLES / "chelsea.png"), *fast, "-o", str(plain)])
    assert r.exit_code == 0, r.stderr
    assert read_manifest(plain) is None
    assert "c2pa" not in r.stderr.lower() and "credential" not in r.stderr.lower()

    monkeypatch.setenv("IMG2IMG_C2PA_CERT", str(cert))
    monkeypatch.setenv("IMG2IMG_C2PA_KEY", str(key))
    r = runner.invoke(app, ["run", str(EXAMPLES / "rocket.jpg"), *fast, "-o", str(by_env)])
    assert r.exit_code == 0, r.stderr
    assert read_manifest(by_env)["ingredients"] == ["rocket.jpg"]


def test_cli_rejects_a_bad_certificate_before_loading_a_model(tmp_path, root):
    from typer.testing import CliRunner

    from img2img_cli.cli import app

    key = ec.generate_private_key(ec.SECP256R1())
    cert, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(_pem(make_leaf(root, key, self_signed=True)))
    keyfile.write_bytes(_key_pem(key))
    out = tmp_path / "out.png"
    r = CliRunner().invoke(app, ["run", str(EXAMPLES / "chelsea.png"), "--model", "tiny", "--steps", "2",
                                 "--c2pa-cert", str(cert), "--c2pa-key", str(keyfile), "-o", str(out)])
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"--c2pa-cert {cert}: rejected by C2PA" in lines[0]
    assert not out.exists()
