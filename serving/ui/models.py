"""The review UI's tables: users, their server-side sessions, one review per analysis job and the
per-finding feedback rows that become training labels.

They share :class:`serving.orm.Base` with the service's tables, and :mod:`serving.db` imports
this module, so ``create_schema`` creates them with the others. Every row carries ``tenant_id``
and every query filters on it, as in :mod:`serving.queries`.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from serving.orm import Base, UTCDateTime, utcnow

__all__ = [
    "FeedbackAction",
    "FindingFeedback",
    "Locale",
    "Review",
    "ReviewStatus",
    "Role",
    "UiSession",
    "User",
]


class Role(StrEnum):
    """What a UI user may do: review studies, or also see every study's audit trail."""

    RADIOLOGIST = "radiologist"
    ADMIN = "admin"


class Locale(StrEnum):
    EN = "en"
    FR = "fr"
    AR = "ar"


class ReviewStatus(StrEnum):
    IN_REVIEW = "in_review"
    SIGNED = "signed"


class FeedbackAction(StrEnum):
    """A radiologist's verdict on one AI finding, a finding they add, or a comment."""

    ACCEPT = "accept"
    REJECT = "reject"
    CORRECT = "correct"
    ADD = "add"
    COMMENT = "comment"


class User(Base):
    """A person who signs in to the review UI of one hospital (password kept as argon2id)."""

    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("tenant_id", "username"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    username: Mapped[str] = mapped_column(String(100))
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16), default=Role.RADIOLOGIST)
    locale: Mapped[str] = mapped_column(String(8), default=Locale.EN)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)


class UiSession(Base):
    """A signed-in browser: the cookie holds ``token``; the row its CSRF token and expiry."""

    __tablename__ = "ui_sessions"

    #: SHA-256 of the cookie's random token (a leaked table grants no session).
    token_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    user: Mapped[User] = relationship()


class Review(Base):
    """A radiologist's review of one analysis job; signing records the impression and locks."""

    __tablename__ = "reviews"
    __table_args__ = (UniqueConstraint("job_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"))
    status: Mapped[str] = mapped_column(String(16), default=ReviewStatus.IN_REVIEW)
    impression: Mapped[str] = mapped_column(Text, default="")
    signed_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    signed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    locked: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    signer: Mapped[User | None] = relationship()


class FindingFeedback(Base):
    """One action on a finding (``finding_id`` None for a finding the radiologist added)."""

    __tablename__ = "finding_feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    finding_id: Mapped[int | None] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(200), default="")
    center_lps_mm: Mapped[list[float] | None] = mapped_column(JSON)
    diameter_mm: Mapped[float | None] = mapped_column(Float)
    comment: Mapped[str] = mapped_column(Text, default="")
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    model_name: Mapped[str | None] = mapped_column(String(100))
    model_version: Mapped[str | None] = mapped_column(String(50))

    user: Mapped[User] = relationship()
