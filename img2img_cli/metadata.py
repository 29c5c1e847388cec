"""Generation parameters in and out of image files: A1111's infotext (:mod:`img2img_cli.infotext`)
in a PNG ``parameters`` text chunk, or in the EXIF UserComment of a JPEG or WebP.

Sources followed here:

- AUTOMATIC1111/stable-diffusion-webui ``modules/images.py`` (commit 08c3caec1eb2b1aaebf045e691c7465d4161476c; later versions
  move the same code into ``save_image_with_geninfo``): PNG gets
  ``PngImagePlugin.PngInfo().add_text("parameters", info)``; JPEG and WebP get
  ``piexif.dump({"Exif": {piexif.ExifIFD.UserComment:
  piexif.helper.UserComment.dump(info, encoding="unicode")}})`` inserted into the file;
  ``read_info_from_image`` reads ``image.info["parameters"]`` and, when the image has EXIF,
  prefers a non-empty UserComment decoded with ``piexif.helper.UserComment.load`` (falling
  back to ``bytes.decode("utf8", errors="ignore")``).
- hMatoba/Piexif ``piexif/helper.py`` (commit 2c348729dea43976f9513a19fec933760be0c7a1):
  a UserComment is an 8-byte character-code prefix (``b"UNICODE\\0"``, ``b"ASCII\\0\\0\\0"``,
  ``b"JIS\\0\\0\\0\\0\\0"``, or eight NULs for "undefined") followed by the text; ``"unicode"``
  is encoded as ``utf_16_be``, and ``load`` decodes with ``errors="replace"``.

Neither piexif nor anything else beyond Pillow is needed here: see :func:`write_image`.
The text functions are re-exported, so ``metadata`` is the one module to import for both.
"""

from __future__ import annotations

import io
import os
import re
import struct
from pathlib import Path

from PIL import Image, PngImagePlugin

from .infotext import RE_PARAM_CODE, append_params, format_infotext, parse_infotext

__all__ = ["RE_PARAM_CODE", "append_params", "format_infotext", "parse_infotext", "read_infotext", "write_image"]

# EXIF / TIFF constants (EXIF 2.32, CIPA DC-008).
_TAG_EXIF_IFD = 0x8769
_TAG_USER_COMMENT = 0x9286
_TYPE_LONG = 4
_TYPE_UNDEFINED = 7
_UNICODE_PREFIX = b"UNICODE\x00"
_ASCII_PREFIX = b"ASCII\x00\x00\x00"
_JIS_PREFIX = b"JIS\x00\x00\x00\x00\x00"
_UNDEFINED_PREFIX = b"\x00" * 8
_JPEG_MAX_EXIF = 65533  # one APP1 segment; Pillow refuses more ("EXIF data is too long")

# Lone surrogates (from undecodable file names) cannot be encoded: written as U+FFFD.
_RE_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
#: The PNG iTXt keyword of an XMP packet (XMP specification part 3, 1.1.5).
XMP_PNG_KEY = "XML:com.adobe.xmp"
_FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}


def _user_comment_exif(text: str) -> bytes:
    """An EXIF block (``Exif\\0\\0`` + big-endian TIFF) holding only ``UserComment = text``.

    The same structure ``piexif.dump({"Exif": {UserComment: UserComment.dump(text,
    encoding="unicode")}})`` produces: IFD0 with one ExifIFD pointer, the Exif IFD with one
    UserComment entry of type UNDEFINED (7), as EXIF requires, then the value
    ``b"UNICODE\\0" + text.encode("utf-16-be")``. Built by hand because Pillow 13 writes a
    ``bytes`` value of a tag it has no type for (UserComment is not in its Exif IFD table)
    as BYTE (1), not UNDEFINED.
    """
    if text[:1] in ("\ufeff", "\ufffe"):
        # A reader honouring byte-order marks would take these for one: write a real mark.
        text = "\ufeff" + text
    comment = _UNICODE_PREFIX + text.encode("utf-16-be")
    ifd0_offset = 8
    exif_ifd_offset = ifd0_offset + 2 + 12 + 4
    data_offset = exif_ifd_offset + 2 + 12 + 4
    tiff = (
        b"MM\x00\x2a"
        + struct.pack(">I", ifd0_offset)
        + struct.pack(">HHHII", 1, _TAG_EXIF_IFD, _TYPE_LONG, 1, exif_ifd_offset)
        + struct.pack(">I", 0)
        + struct.pack(">HHHII", 1, _TAG_USER_COMMENT, _TYPE_UNDEFINED, len(comment), data_offset)
        + struct.pack(">I", 0)
        + comment
    )
    return b"Exif\x00\x00" + tiff


def write_image(image: Image.Image, path: Path, fmt: str, infotext: str, *, quality: int = 95, xmp: bytes | None = None) -> None:
    """Save ``image`` to ``path`` in ``fmt`` with ``infotext`` embedded the way A1111 does.

    Args:
        image: any Pillow image. JPEG gets modes other than ``RGB`` and ``L`` converted to
            ``RGB`` (A1111 converts ``RGBA`` to ``RGB`` too); WebP keeps ``RGB``/``RGBA`` and
            converts other modes to ``RGBA`` if they have transparency, else ``RGB``.
        path: the file to write (``str`` or path-like), typically a temporary name: the format
            comes from ``fmt``, never from the suffix. Written in place, not atomically;
            Pillow removes a file it created if encoding fails.
        fmt: ``"png"``, ``"jpg"``/``"jpeg"`` or ``"webp"`` (any case).
        infotext: the text to embed, e.g. from :func:`format_infotext`. Lone surrogates
            (not valid Unicode, e.g. from undecodable command-line bytes) are stored as
            U+FFFD; every other string is read back unchanged by :func:`read_infotext`.
        quality: JPEG and WebP quality, an ``int`` from 0 to 100 (Pillow's scale; WebP is
            written lossy). Ignored for PNG, which uses Pillow's default compression.
        xmp: an XMP packet (UTF-8, :func:`img2img_cli.provenance.xmp_packet`) or ``None``. PNG:
            an uncompressed ``iTXt`` chunk with keyword ``XML:com.adobe.xmp`` (the XMP
            specification, part 3, "PNG"); JPEG: an APP1 segment with the
            ``http://ns.adobe.com/xap/1.0/`` header; WebP: an ``XMP`` chunk; the last two
            written by Pillow's ``xmp=`` save option. The infotext is not touched.

    Where the text goes:
        PNG: a text chunk with keyword ``parameters`` via ``PngInfo.add_text``, as A1111
        does; Pillow writes ``tEXt`` when the text is Latin-1 and, since ``tEXt`` cannot hold
        anything else, an uncompressed UTF-8 ``iTXt`` chunk otherwise (so A1111 writes
        ``iTXt`` for such text as well).

        JPEG and WebP: EXIF (JPEG APP1 segment, WebP ``EXIF`` chunk) with the UserComment
        tag (0x9286) in the Exif IFD, type UNDEFINED, value ``b"UNICODE\\0"`` + UTF-16
        big-endian text, what A1111 writes with ``piexif.helper.UserComment.dump(...,
        encoding="unicode")``. A text starting with U+FEFF or U+FFFE gets a U+FEFF byte
        order mark in front so that it reads back unchanged.

    Raises:
        ValueError: unknown ``fmt``; ``quality`` not an int in 0..100; for JPEG, an infotext
            over 32,737 UTF-16 code units (the EXIF segment of a JPEG holds at most 65,533
            bytes); nothing is written then.
        TypeError: ``infotext`` is not a ``str``.
        OSError: the file cannot be written (Pillow's and the OS's errors, unchanged).
    """
    pil_format = _FORMATS.get(fmt.lower()) if isinstance(fmt, str) else None
    if pil_format is None:
        raise ValueError(f"unknown image format {fmt!r}: expected one of png, jpg, jpeg, webp")
    if isinstance(quality, bool) or not isinstance(quality, int) or not 0 <= quality <= 100:
        raise ValueError(f"quality must be an int from 0 to 100, not {quality!r}")
    if not isinstance(infotext, str):
        raise TypeError(f"infotext must be a str, not {type(infotext).__name__}")
    text = _RE_LONE_SURROGATE.sub("\ufffd", infotext)
    target = os.fspath(path)

    if pil_format == "PNG":
        pnginfo = PngImagePlugin.PngInfo()
        pnginfo.add_text("parameters", text)
        if xmp:
            pnginfo.add_itxt(XMP_PNG_KEY, xmp.decode("utf-8"), zip=False)
        image.save(target, format="PNG", pnginfo=pnginfo)
        return

    exif = _user_comment_exif(text)
    if pil_format == "JPEG":
        if len(exif) > _JPEG_MAX_EXIF:
            raise ValueError(
                f"infotext too long for JPEG EXIF ({len(exif)} bytes, at most {_JPEG_MAX_EXIF}); use png or webp"
            )
        if image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
    elif image.mode not in ("RGB", "RGBA"):
        image = image.convert("RGBA" if image.has_transparency_data else "RGB")
    image.save(target, format=pil_format, quality=quality, exif=exif, **({"xmp": xmp} if xmp else {}))


def _decode_utf16(body: bytes, tiff_big_endian: bool) -> str:
    """The text of a ``UNICODE`` UserComment.

    piexif (and so A1111) writes UTF-16 big-endian without a byte order mark; some other
    writers use little-endian, typically in little-endian (``II``) EXIF. Order of evidence:
    a byte order mark (removed); in big-endian (``MM``) EXIF, big-endian; in little-endian
    EXIF, little-endian only if more zero bytes sit at odd offsets than at even ones (as in
    mostly-ASCII text written little-endian), else big-endian.
    """
    if body[:2] == b"\xfe\xff":
        return body[2:].decode("utf-16-be", "replace")
    if body[:2] == b"\xff\xfe":
        return body[2:].decode("utf-16-le", "replace")
    if not tiff_big_endian and body[1::2].count(0) > body[0::2].count(0):
        return body.decode("utf-16-le", "replace")
    return body.decode("utf-16-be", "replace")


def _decode_user_comment(raw: object, tiff_big_endian: bool) -> str | None:
    """A UserComment value as Pillow returns it, decoded like ``piexif.helper.UserComment.load``."""
    if isinstance(raw, str):  # a writer used type ASCII; Pillow decoded it as Latin-1
        raw = raw.encode("latin-1", "replace")
    if not isinstance(raw, bytes):
        return None
    prefix, body = raw[:8], raw[8:]
    if prefix == _UNICODE_PREFIX:
        return _decode_utf16(body, tiff_big_endian)
    if prefix == _ASCII_PREFIX:
        return body.decode("ascii", "replace")
    if prefix == _JIS_PREFIX:
        return body.decode("shift_jis", "replace")
    if prefix == _UNDEFINED_PREFIX:
        return body.decode("utf-8", "replace")
    # No known character code: A1111 falls back to raw.decode("utf8", errors="ignore").
    return raw.decode("utf-8", "ignore")


def _exif_comment(im: Image.Image) -> str | None:
    if "exif" not in im.info:  # A1111: `if "exif" in items`
        return None
    try:
        exif = im.getexif()
        raw = exif.get_ifd(_TAG_EXIF_IFD).get(_TAG_USER_COMMENT)
        if raw is None:
            return None
        return _decode_user_comment(raw, exif.endian != "<")
    except Exception:
        return None


def _png_parameters(im: Image.Image) -> str | None:
    value = im.info.get("parameters")
    if value is None and im.format == "PNG":
        try:
            value = im.text.get("parameters")  # text chunks after the image data: loads it
        except Exception:
            return None
    return str(value) if isinstance(value, str) else None


def read_infotext(path: Path) -> str | None:
    """The infotext stored in an image file, or ``None`` if it has none.

    Looks where :func:`write_image` and A1111 write it, in A1111's order
    (``read_info_from_image``): the EXIF UserComment (JPEG, WebP, or a PNG ``eXIf`` chunk)
    if it is non-empty, else a ``parameters`` text chunk (PNG ``tEXt``, ``iTXt`` or ``zTXt``,
    before or after the image data). UserComment character codes: ``UNICODE`` is UTF-16 (a
    byte order mark is honoured; without one big-endian, as A1111/piexif write, unless the
    EXIF is little-endian and the bytes look little-endian), ``ASCII`` is ASCII, ``JIS`` is
    Shift-JIS, undefined (eight NULs) is taken as UTF-8, and an unknown prefix is decoded as
    UTF-8 ignoring errors like A1111; undecodable bytes become U+FFFD.

    Args:
        path: the image file (``str`` or path-like).

    Returns:
        The text, unchanged from what :func:`write_image` was given (``""`` if that was
        empty); ``None`` when the file is not an image Pillow can open, is corrupt, or
        carries no infotext.

    Raises:
        OSError: only when the file itself cannot be read, with the exception ``open()``
            raised (``FileNotFoundError``, ``IsADirectoryError``, ``PermissionError``...,
            all subclasses of ``OSError``). Everything after the bytes are read is caught:
            Pillow's own ``OSError`` subclasses for non-images (``UnidentifiedImageError``)
            or truncated files give ``None``, never an exception.
    """
    data = Path(path).read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as im:
            found = [_exif_comment(im), _png_parameters(im)]
    except Exception:
        return None
    present = [text for text in found if text is not None]
    for text in present:
        if text:
            return text
    return present[0] if present else None
