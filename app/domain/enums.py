"""Enumerations shared by every layer (values are the GraphQL enum values)."""

from __future__ import annotations

from enum import Enum


class AccountRole(str, Enum):
    ADMIN = "ADMIN"
    USER = "USER"


class ImageVisibility(str, Enum):
    PUBLIC = "PUBLIC"
    PRIVATE = "PRIVATE"
    SHARED = "SHARED"


class ImageKind(str, Enum):
    SYSTEM_DISK = "SYSTEM_DISK"
    DATA_DISK = "DATA_DISK"
    FULL_ECS = "FULL_ECS"
    ISO = "ISO"


class ImageStatus(str, Enum):
    QUEUED = "QUEUED"
    SAVING = "SAVING"
    ACTIVE = "ACTIVE"
    KILLED = "KILLED"


class DiskFormat(str, Enum):
    RAW = "RAW"
    QCOW2 = "QCOW2"
    VMDK = "VMDK"
    VHD = "VHD"
    VHDX = "VHDX"
    ISO = "ISO"


class ExportFormat(str, Enum):
    """The formats an image is exported as (a subset of DiskFormat, same values)."""

    QCOW2 = "QCOW2"
    VMDK = "VMDK"
    VHD = "VHD"
    RAW = "RAW"


class BootMode(str, Enum):
    BIOS = "BIOS"
    UEFI = "UEFI"


class OsType(str, Enum):
    LINUX = "LINUX"
    WINDOWS = "WINDOWS"
    OTHER = "OTHER"


class DiskRole(str, Enum):
    SYSTEM = "SYSTEM"
    DATA = "DATA"


class OriginType(str, Enum):
    SERVER = "SERVER"
    VOLUME = "VOLUME"
    FILE = "FILE"
    IMAGE = "IMAGE"
    BACKUP = "BACKUP"
    NONE = "NONE"


class MemberStatus(str, Enum):
    PENDING = "PENDING"
    ACCEPTED = "ACCEPTED"
    REJECTED = "REJECTED"


class OrderDirection(str, Enum):
    ASC = "ASC"
    DESC = "DESC"


class ImageOrderField(str, Enum):
    CREATED_AT = "CREATED_AT"
    NAME = "NAME"
    SIZE = "SIZE"
    STATUS = "STATUS"


class QuotaResource(str, Enum):
    PRIVATE_IMAGES = "PRIVATE_IMAGES"
    CONCURRENT_REPLICATIONS = "CONCURRENT_REPLICATIONS"
    CONCURRENT_CREATIONS = "CONCURRENT_CREATIONS"


class JobStatus(str, Enum):
    INIT = "INIT"
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    FAIL = "FAIL"


class JobType(str, Enum):
    CREATE_IMAGE_FROM_SERVER = "CREATE_IMAGE_FROM_SERVER"
    CREATE_FULL_ECS_IMAGE = "CREATE_FULL_ECS_IMAGE"
    CREATE_IMAGE_FROM_VOLUME = "CREATE_IMAGE_FROM_VOLUME"
    IMPORT_IMAGE = "IMPORT_IMAGE"
    EXPORT_IMAGE = "EXPORT_IMAGE"
    REPLICATE_IMAGE = "REPLICATE_IMAGE"
    EXPORT_IMAGE_LIST = "EXPORT_IMAGE_LIST"


#: Job types that create images (the CONCURRENT_CREATIONS quota).
CREATION_JOB_TYPES = frozenset(
    {
        JobType.CREATE_IMAGE_FROM_SERVER,
        JobType.CREATE_FULL_ECS_IMAGE,
        JobType.CREATE_IMAGE_FROM_VOLUME,
        JobType.IMPORT_IMAGE,
    }
)
ACTIVE_JOB_STATUSES = frozenset({JobStatus.INIT, JobStatus.RUNNING})
