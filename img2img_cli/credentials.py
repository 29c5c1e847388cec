"""C2PA Content Credentials: a signed manifest in each output (``--c2pa-cert`` / ``--c2pa-key``).

With a certificate and its private key, every output gets a C2PA manifest, signed with
`c2pa-python <https://github.com/contentauth/c2pa-python>`_ (the Content Authenticity
Initiative's bindings of c2pa-rs; ``pip install 'img2img-cli[c2pa]'``), that records:

- ``claim_generator_info``: ``img2img-cli`` and its version;
- a ``c2pa.actions.v2`` assertion whose action carries the IPTC digital source type (the
  same term as the XMP label, :mod:`img2img_cli.provenance`) and the software agent:

  - img2img (``c2pa.created``): one action, ``c2pa.created``; the source image is an
    ingredient with the relationship ``inputTo`` (C2PA 2.x: an input to a generative
    process; not ``parentOf``, which a ``created`` manifest must not have), linked from
    the action's ``parameters.ingredients``;
  - inpainting (``c2pa.edited``): two actions, ``c2pa.opened`` (the source, a
    ``parentOf`` ingredient) then ``c2pa.edited``: C2PA 2.x requires the first action to
    be ``created`` or ``opened``, and c2pa-rs rejects a manifest that starts with
    ``edited``;

- the source image as that ingredient, hashed and with its own manifest (if it has one)
  when c2pa can read its format (PNG, JPEG, WebP, TIFF, GIF, AVIF, HEIF...); for a format
  it cannot (BMP, PPM...) or a source it fails to parse, an ingredient described by title
  and MIME type only, so the output is still signed.

Without a certificate nothing is signed and nothing is said. Signing happens in the
writer thread, after the image, its infotext and its XMP are written to a temporary file
and before that file is moved into place (:func:`img2img_cli.writing.atomic_save`); the
manifest is added beside the existing metadata, which c2pa leaves as it is.

What c2pa-rs asks of the certificate (checked when signing, so :meth:`Signing.load` signs
a tiny test image to fail before any model loads): an X.509 v3 end-entity certificate
issued by a CA, not self-signed and not a CA itself, with a critical Key Usage that has
``digitalSignature`` and an Extended Key Usage with ``emailProtection``
(1.3.6.1.5.5.7.3.4; c2pa-python 0.38 / c2pa-rs 0.91 rejected ``documentSigning`` and the
C2PA claim-signing EKU in our tests), first in the PEM file followed by its intermediates.
The private key must be unencrypted; EC P-256/P-384/P-521 (ES256/384/512), RSA (PS256) or
Ed25519. Without a time-stamp authority the signature is valid while the certificate is.
Readers that do not trust the root CA report ``signingCredential.untrusted`` (the C2PA trust
list holds commercial CAs); the manifest itself is still valid.
"""

from __future__ import annotations

import datetime
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .errors import OutputError, UsageError
from .io import display
from .writing import temp_prefix

#: IPTC Digital Source Type vocabulary (as :data:`img2img_cli.provenance.VOCABULARY`).
VOCABULARY = "http://cv.iptc.org/newscodes/digitalsourcetype/"

#: What c2pa-rs requires of a signing certificate, said when it rejects one.
CERT_RULE = (
    "C2PA needs an end-entity certificate issued by a CA (not self-signed, not a CA), with a "
    "critical Key Usage digitalSignature and an Extended Key Usage emailProtection, "
    "first in the file and followed by its intermediates"
)

_MIME = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "webp": "image/webp"}
#: c2pa's ingredient label used to link the action to the source image.
_SOURCE_LABEL = "source"


def _one_line(text: object) -> str:
    return " ".join(str(text).split()) or "unknown error"


def _import_c2pa(flag: str = "--c2pa-cert"):
    try:
        import c2pa
    except ImportError:
        raise UsageError(
            f"{flag}: signing C2PA Content Credentials needs c2pa-python: "
            "pip install c2pa-python (or 'img2img-cli[c2pa]')"
        ) from None
    except Exception as e:  # the native library failed to load
        raise UsageError(f"{flag}: c2pa-python cannot be loaded ({_one_line(e)})") from None
    return c2pa


@dataclass(frozen=True)
class Signing:
    """A checked certificate chain and private key to sign C2PA manifests with.

    Holds only bytes: each :func:`sign` builds its own c2pa ``Signer`` and ``Builder``
    (a ``Builder`` signs once; a ``Signer`` is cheap to make), so a ``Signing`` is safe to
    share between threads.

    Attributes:
        cert: the ``--c2pa-cert`` file.
        key: the ``--c2pa-key`` file.
        alg: the c2pa signing algorithm: ``es256``, ``es384``, ``es512``, ``ps256`` or ``ed25519``.
        cert_chain: the certificates, re-encoded as PEM (signing certificate first).
        private_key: the private key, re-encoded as unencrypted PKCS#8 PEM (c2pa-rs reads
            only ``BEGIN PRIVATE KEY``; SEC1 ``EC PRIVATE KEY`` and PKCS#1 ``RSA PRIVATE KEY``
            files are converted).
    """

    cert: Path
    key: Path
    alg: str
    cert_chain: bytes = field(repr=False)
    private_key: bytes = field(repr=False)

    @classmethod
    def load(cls, cert: Path, key: Path) -> "Signing":
        """Read and check ``cert`` and ``key``, and sign a tiny test image with them.

        Raises:
            UsageError: one line naming ``--c2pa-cert`` or ``--c2pa-key`` and the file:
                unreadable, not PEM, an encrypted or unsupported key, a key that does not
                match the certificate, a certificate c2pa rejects (with :data:`CERT_RULE`),
                or c2pa-python not installed.
        """
        _import_c2pa()
        try:
            from cryptography import x509
            from cryptography.hazmat.primitives import serialization
        except ImportError:  # c2pa-python depends on cryptography; only a broken install lacks it
            raise UsageError("--c2pa-cert: signing C2PA Content Credentials needs cryptography: pip install cryptography") from None

        cert, key = Path(cert), Path(key)
        cert_name, key_name = display(cert), display(key)
        cert_bytes = _read("--c2pa-cert", cert)
        key_bytes = _read("--c2pa-key", key)
        try:
            certs = x509.load_pem_x509_certificates(cert_bytes)
        except Exception:
            raise UsageError(
                f"--c2pa-cert {cert_name}: not a PEM certificate chain (-----BEGIN CERTIFICATE-----)"
            ) from None
        try:
            private = serialization.load_pem_private_key(key_bytes, password=None)
        except TypeError:  # encrypted
            raise UsageError(
                f"--c2pa-key {key_name}: the private key is encrypted; decrypt it "
                "(openssl pkey -in KEY -out plain.pem) and keep that file private"
            ) from None
        except Exception as e:
            what = "unsupported private key" if type(e).__name__ == "UnsupportedAlgorithm" else "not a PEM private key"
            raise UsageError(f"--c2pa-key {key_name}: {what} (-----BEGIN PRIVATE KEY-----)") from None
        alg = _algorithm(private)
        if alg is None:
            raise UsageError(
                f"--c2pa-key {key_name}: unsupported key type {_key_kind(private)}; "
                "C2PA signs with EC P-256/P-384/P-521, RSA (2048 bits or more) or Ed25519 keys"
            )
        spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        if private.public_key().public_bytes(*spki) != certs[0].public_key().public_bytes(*spki):
            raise UsageError(
                f"--c2pa-key {key_name} does not match the certificate in --c2pa-cert {cert_name} "
                "(the signing certificate must come first in the file)"
            )
        start, end = _validity(certs[0])
        now = datetime.datetime.now(datetime.timezone.utc)
        if not start <= now <= end:
            raise UsageError(
                f"--c2pa-cert {cert_name}: the signing certificate is not valid now "
                f"(valid from {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC)"
            )
        signing = cls(
            cert=cert,
            key=key,
            alg=alg,
            cert_chain=b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs),
            private_key=private.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
        )
        signing._check()
        return signing

    def signer(self):
        """A new c2pa ``Signer`` (no time-stamp authority).

        Raises:
            c2pa.C2paError: the certificate or key is not accepted.
        """
        import c2pa

        return c2pa.Signer.from_info(c2pa.C2paSignerInfo(self.alg.encode(), self.cert_chain, self.private_key, None))

    def _check(self) -> None:
        """Sign a tiny in-memory PNG, so a certificate c2pa rejects fails now, not on each output."""
        import io

        import c2pa
        from PIL import Image

        buf = io.BytesIO()
        Image.new("RGB", (8, 8)).save(buf, "PNG")
        manifest = _manifest("image/png", "check.png", "c2pa.created", "trainedAlgorithmicMedia", "img2img-cli", None)
        try:
            signer = self.signer()
        except Exception as e:
            raise UsageError(f"--c2pa-key {display(self.key)}: rejected by C2PA ({_one_line(e)})") from None
        try:
            with signer:
                builder = c2pa.Builder(manifest)
                builder.sign(signer, "image/png", io.BytesIO(buf.getvalue()), io.BytesIO())
        except Exception as e:
            message = _one_line(e)
            if "private key" in message or "does not match" in message:
                raise UsageError(f"--c2pa-key {display(self.key)}: rejected by C2PA ({message})") from None
            raise UsageError(f"--c2pa-cert {display(self.cert)}: rejected by C2PA ({message}); {CERT_RULE}") from None


def _read(flag: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise UsageError(f"{flag} {display(path)}: cannot read ({e.strerror or _one_line(e)})") from None


def _validity(cert) -> tuple[datetime.datetime, datetime.datetime]:
    """The certificate's validity period as aware UTC datetimes (cryptography < 42 has naive ones)."""
    try:
        return cert.not_valid_before_utc, cert.not_valid_after_utc
    except AttributeError:
        utc = datetime.timezone.utc
        return cert.not_valid_before.replace(tzinfo=utc), cert.not_valid_after.replace(tzinfo=utc)


def _algorithm(private) -> str | None:
    """The c2pa algorithm for a ``cryptography`` private key, or ``None`` if C2PA has none."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    if isinstance(private, ec.EllipticCurvePrivateKey):
        return {"secp256r1": "es256", "secp384r1": "es384", "secp521r1": "es512"}.get(private.curve.name)
    if isinstance(private, rsa.RSAPrivateKey):
        return "ps256" if private.key_size >= 2048 else None
    if isinstance(private, ed25519.Ed25519PrivateKey):
        return "ed25519"
    return None


def _key_kind(private) -> str:
    curve = getattr(private, "curve", None)
    if curve is not None:
        return f"EC {curve.name}"
    size = getattr(private, "key_size", None)
    name = type(private).__name__.replace("PrivateKey", "").lstrip("_")
    return f"{name} {size} bits" if size else name


def _software(software: str) -> dict:
    """``img2img-cli 0.1.0`` -> ``{"name": "img2img-cli", "version": "0.1.0"}``."""
    name, _, version = software.strip().rpartition(" ")
    if not name:
        return {"name": software.strip() or "img2img-cli"}
    return {"name": name, "version": version}


def _manifest(mime: str, title: str | None, action: str, source_type: str, software: str, ingredient: dict | None) -> dict:
    """The manifest definition for c2pa's ``Builder``."""
    agent = _software(software)
    uri = source_type if "://" in source_type else VOCABULARY + source_type
    main = {"action": action, "digitalSourceType": uri, "softwareAgent": agent}
    if action == "c2pa.created":
        actions = [main]
        if ingredient is not None:
            main["parameters"] = {"ingredientIds": [_SOURCE_LABEL]}
    else:
        # C2PA 2.x: the first action is created or opened; opened names the parent ingredient.
        opened = {"action": "c2pa.opened", "softwareAgent": agent}
        if ingredient is not None:
            opened["parameters"] = {"ingredientIds": [_SOURCE_LABEL]}
        actions = [opened, main]
    manifest = {
        "claim_generator_info": [agent],
        "format": mime,
        "assertions": [{"label": "c2pa.actions.v2", "data": {"actions": actions}}],
    }
    if title:
        manifest["title"] = title
    if ingredient is not None and "stream" not in ingredient:
        manifest["ingredients"] = [ingredient["json"]]
    return manifest


def _ingredient(path: Path, relationship: str, supported: set[str]) -> dict:
    """``{"json": ingredient definition, "stream": mime}`` when c2pa can read ``path``'s format,
    else ``{"json": ...}`` alone (title and format, nothing hashed or embedded)."""
    mime = _mime_of(path)
    definition = {"title": path.name, "relationship": relationship, "label": _SOURCE_LABEL}
    if mime and mime in supported:
        return {"json": definition, "stream": mime}
    if mime:
        definition["format"] = mime
    return {"json": definition}


def _mime_of(path: Path) -> str | None:
    """The MIME type of an image file, from its content (Pillow) or else its extension."""
    import mimetypes

    try:
        from PIL import Image

        with Image.open(path) as im:
            mime = im.get_format_mimetype()
        if mime:
            return mime
    except Exception:
        pass
    return mimetypes.guess_type(path.name)[0]


def sign(
    signing: Signing,
    path: Path,
    fmt: str,
    *,
    action: str,
    source_type: str,
    ingredient: Path,
    software: str,
    name: str | None = None,
) -> None:
    """Embed a signed C2PA manifest into the image file ``path``, in place.

    The signed copy is written to a hidden sibling temporary file (named like
    :func:`img2img_cli.writing.temp_prefix`, so a killed process's leftover is cleaned up), given
    ``path``'s permission bits and moved over ``path`` with ``os.replace``.

    Args:
        fmt: ``png``, ``jpg`` or ``webp``.
        action: ``c2pa.created`` (img2img) or ``c2pa.edited`` (inpainting, outpainting).
        source_type: an IPTC digital source type term (``trainedAlgorithmicMedia``...) or URI.
        ingredient: the source image file.
        software: the software agent and claim generator, ``img2img-cli <version>``.
        name: the output's final file name, for the manifest title and error messages
            (default: ``path``'s; the caller passes a temporary file).

    Raises:
        OutputError: one line naming the file (``errno`` set for an OS error, e.g. a full disk).
    """
    path = Path(path)
    shown = name or display(path)
    mime = _MIME.get(fmt.lower())
    if mime is None:
        raise OutputError(f"{shown}: cannot sign C2PA manifest (unsupported format {fmt!r})")
    try:
        import c2pa
    except Exception as e:
        raise OutputError(f"{shown}: cannot sign C2PA manifest (c2pa-python: {_one_line(e)})") from None
    tmp = None
    try:
        mode = os.stat(path).st_mode & 0o7777
        relationship = "inputTo" if action == "c2pa.created" else "parentOf"
        supported = set(c2pa.Builder.get_supported_mime_types())
        ingredient = Path(ingredient)
        ing = _ingredient(ingredient, relationship, supported)
        title = Path(name).name if name else None
        builder = None
        if "stream" in ing:
            try:
                builder = c2pa.Builder(_manifest(mime, title, action, source_type, software, ing))
                with open(ingredient, "rb") as f:
                    builder.add_ingredient(ing["json"], ing["stream"], f)
            except (c2pa.C2paError, OSError):
                # c2pa could not parse the source (or it went away): describe it instead.
                if builder is not None:
                    builder.close()
                builder = None
                ing = {"json": {**ing["json"], "format": ing["stream"]}}
        if builder is None:
            builder = c2pa.Builder(_manifest(mime, title, action, source_type, software, ing))
        fd, tmp_name = tempfile.mkstemp(prefix=temp_prefix() + "c2pa-", suffix=".tmp", dir=path.parent)
        tmp = Path(tmp_name)
        with os.fdopen(fd, "w+b") as dst, open(path, "rb") as src, signing.signer() as signer:
            builder.sign(signer, mime, src, dst)
            dst.flush()
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise OutputError(f"{shown}: cannot sign C2PA manifest ({e.strerror or _one_line(e)})", e.errno) from None
    except Exception as e:
        raise OutputError(f"{shown}: cannot sign C2PA manifest ({_one_line(e)})") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def read_manifest(path: Path, *, trust_anchors: bytes | str | None = None) -> dict | None:
    """The active C2PA manifest of an image file, summarised, or ``None`` when it has none,
    c2pa-python is not installed, or c2pa cannot read the file. Never raises.

    Returns:
        ``{"claim_generator": "img2img-cli 0.1.0", "actions": ["c2pa.created", ...],
        "digital_source_type": "trainedAlgorithmicMedia", "validation": "valid",
        "trusted": False, "signer": "...", "ingredients": ["chelsea.png"]}``:

        - ``digital_source_type``: of the first action that has one; the IPTC term, or the
          whole value when it is not in IPTC's vocabulary (as
          :func:`img2img_cli.provenance.read_source_type`); ``None`` if no action has one.
        - ``validation``: ``"valid"`` when c2pa's validation state is ``Valid`` or
          ``Trusted`` (the signature and every hash check out), else the first failure code
          other than ``signingCredential.untrusted`` (``assertion.dataHash.mismatch`` for an
          image changed after signing...).
        - ``trusted``: the signing certificate chains to a trusted root: one of
          ``trust_anchors`` (PEM) or c2pa's configured trust list. A certificate of one's
          own CA is ``False`` (c2pa reports ``signingCredential.untrusted``, informational).
        - ``signer``: the signing certificate's common name (or issuer), or ``None``.
    """
    try:
        import c2pa
    except Exception:
        return None
    try:
        import contextlib

        with contextlib.ExitStack() as stack:
            context = None
            if trust_anchors:
                anchors = trust_anchors.decode("ascii") if isinstance(trust_anchors, bytes) else trust_anchors
                settings = c2pa.Settings.from_dict({"trust": {"trust_anchors": anchors}})
                context = stack.enter_context(c2pa.Context(settings))
            f = stack.enter_context(open(path, "rb"))
            reader = stack.enter_context(c2pa.Reader(f, context=context))  # format detected from the bytes
            data = json.loads(reader.json())
            state = reader.get_validation_state()
        return _summary(data, state)
    except Exception:
        return None


def _summary(data: dict, state: str | None) -> dict | None:
    active = (data.get("manifests") or {}).get(data.get("active_manifest") or "")
    if not active:
        return None
    info = active.get("claim_generator_info") or []
    if info and isinstance(info[0], dict):
        claim_generator = " ".join(str(info[0][k]) for k in ("name", "version") if info[0].get(k))
    else:
        claim_generator = str(active.get("claim_generator") or "")
    actions, source_type = [], None
    for assertion in active.get("assertions") or []:
        if not str(assertion.get("label", "")).startswith("c2pa.actions"):
            continue
        for a in (assertion.get("data") or {}).get("actions") or []:
            actions.append(a.get("action"))
            if source_type is None and a.get("digitalSourceType"):
                source_type = a["digitalSourceType"]
    if isinstance(source_type, str) and source_type.startswith(VOCABULARY):
        source_type = source_type[len(VOCABULARY):]
    if state in ("Valid", "Trusted"):
        validation = "valid"
    else:
        failures = ((data.get("validation_results") or {}).get("activeManifest") or {}).get("failure") or []
        codes = [f.get("code") for f in failures or data.get("validation_status") or [] if f.get("code")]
        # An untrusted signer is what "trusted" says; name the failure that made it invalid.
        codes = [c for c in codes if c != "signingCredential.untrusted"] or codes
        validation = codes[0] if codes else (state or "invalid").lower()
    sig = active.get("signature_info") or {}
    return {
        "claim_generator": claim_generator,
        "actions": actions,
        "digital_source_type": source_type,
        "validation": validation,
        "trusted": state == "Trusted",
        "signer": sig.get("common_name") or sig.get("issuer"),
        "ingredients": [i.get("title") for i in active.get("ingredients") or []],
    }
