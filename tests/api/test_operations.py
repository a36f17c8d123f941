"""The documents in graphql/operations: valid against the served schema, and each one run
through the generated client (`app.client`, its typed methods) over real HTTP against the
live server. The client raises on any top-level GraphQL error and validates every response
against its pydantic models, so a passing call already proves the shape; the checks below
prove the meaning."""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from graphql import DocumentNode, OperationDefinitionNode, concat_ast, parse, validate

from app.api.schema import build_schema
from app.client import (
    CreateAccountInput,
    CreateApiTokenInput,
    CreateBucketInput,
    CreateImageFromServerInput,
    CreateImageFromVolumeInput,
    CreateKmsGrantInput,
    CreateKmsKeyInput,
    CreateServerInput,
    CreateUploadUrlInput,
    CreateVolumeInput,
    DataDiskInput,
    DeleteBackupsInput,
    DeleteImagesInput,
    DeleteServerInput,
    DeleteVolumesInput,
    ExportFormat,
    ExportImageInput,
    ExportImageListInput,
    ImageKind,
    ImageTagsInput,
    ImageVisibility,
    ImportImageInput,
    ImsClient,
    JobFilter,
    KmsGrantOperation,
    KmsKeyStateInput,
    MemberStatus,
    OperatingSystemInput,
    OsType,
    PublishImageInput,
    QuotaResource,
    RemoveImageTagsInput,
    ReplicateImageInput,
    RevokeApiTokenInput,
    RevokeKmsGrantInput,
    SetImageProtectionInput,
    SetQuotaInput,
    ShareImagesInput,
    StartServerInput,
    StopServerInput,
    TagInput,
    UnshareImagesInput,
    UpdateImageInput,
    UpdateImageMembershipInput,
)
from app.db.tables import Account, ApiToken, Image
from app.db.types import new_id, utcnow
from app.db.uow import Database
from app.services.accounts import hash_token, new_token
from tests.conftest import LiveServer
from tests.factories import make_account, make_image, make_image_with_data, share

OPERATIONS = Path(__file__).resolve().parents[2] / "graphql" / "operations"


def documents() -> dict[str, DocumentNode]:
    return {path.name: parse(path.read_text()) for path in sorted(OPERATIONS.glob("*.graphql"))}


def operation_names() -> list[str]:
    return [
        d.name.value
        for doc in documents().values()
        for d in doc.definitions
        if isinstance(d, OperationDefinitionNode) and d.name is not None
    ]


def method_name(operation: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", operation).lower()


# ---------------------------------------------------------------- the documents


def test_every_document_is_valid_against_the_served_schema() -> None:
    docs = documents()
    assert {"accounts.graphql", "images.graphql", "tags.graphql", "storage.graphql", "health.graphql"} <= set(docs)
    # Fragments are shared across the folder, as both generated clients read it.
    assert validate(build_schema()._schema, concat_ast(list(docs.values()))) == []


def test_operations_are_named_and_unique() -> None:
    anonymous = [name for name, doc in documents().items()
                 for d in doc.definitions if isinstance(d, OperationDefinitionNode) and d.name is None]
    assert anonymous == []
    names = operation_names()
    assert len(names) == len(set(names))


#: Subscriptions run in their own tests below (an async iterator, not one payload).
SUBSCRIPTIONS = ("JobUpdated",)


def test_every_operation_is_executed_below() -> None:
    assert sorted(operation_names()) == sorted([*CASES, *SUBSCRIPTIONS])


def test_the_client_has_a_method_per_operation() -> None:
    assert [n for n in operation_names() if not callable(getattr(ImsClient, method_name(n), None))] == []


# ---------------------------------------------------------------- running them


@dataclass
class World:
    """What the cases act on: a user with a private image, the bootstrap admin, the server."""

    db: Database
    server: LiveServer
    admin: Account
    user: Account
    user_token: str
    image: Image

    async def image_of(self, owner: Account, **fields: Any) -> Image:
        return await make_image(self.db, owner, **fields)

    async def token_of(self, account: Account) -> str:
        """Another API token of `account`; returns its id."""
        row = ApiToken(id=new_id("tok"), account_id=account.id, name="spare", token_hash=hash_token(new_token()),
                       created_at=utcnow())
        async with self.db.uow() as uow:
            await uow.accounts.add_token(row)
            await uow.commit()
        return row.id


Kwargs = Callable[[World, ImsClient], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Case:
    """One operation: the method's arguments (after any set-up), who calls it, and the
    `__typename` its payload must have (`None` where the payload is no union)."""

    kwargs: Kwargs
    payload: Callable[[Any], Any]
    typename: str | None
    check: Callable[[Any, World], bool] = lambda payload, world: True
    caller: str | None = "user"  # "user", "admin" or None (no token)


async def no_args(_w: World, _c: ImsClient) -> dict[str, Any]:
    return {}


async def spare_token(w: World, _c: ImsClient) -> dict[str, Any]:
    return {"input": RevokeApiTokenInput(id=await w.token_of(w.user))}


async def catalog(w: World, _c: ImsClient) -> dict[str, Any]:
    """One image of each union member, as the user sees them."""
    await w.image_of(w.admin, visibility="PUBLIC")
    other, _ = await make_account(w.db)
    await share(w.db, await w.image_of(other), w.user)
    return {"first": 10}


async def admins_image(w: World, _c: ImsClient) -> dict[str, Any]:
    return {"input": PublishImageInput(id=(await w.image_of(w.admin)).id)}


async def tagged_image(w: World, _c: ImsClient) -> dict[str, Any]:
    image = await w.image_of(w.user, tags={"env": "prod", "team": "core"})
    return {"input": RemoveImageTagsInput(imageId=image.id, keys=["env"])}


async def bucket(c: ImsClient, name: str = "my-bucket") -> str:
    created = await c.create_bucket(input=CreateBucketInput(name=name))
    assert created.create_bucket.typename__ == "CreateBucketSuccess"
    return name


BODY = b"disk bytes\n" * 1000


async def export_target(w: World, c: ImsClient) -> dict[str, Any]:
    image = await make_image_with_data(w.db, w.server.settings, w.user, BODY[:8192])
    return {"input": ExportImageInput(imageId=image.id, bucket=await bucket(c, "exports"), key="web.vhd",
                                      format=ExportFormat.VHD)}


async def bucket_with_object(_w: World, c: ImsClient) -> dict[str, Any]:
    payload = (await c.create_upload_url(input=CreateUploadUrlInput(bucket=await bucket(c), key="dir/a.raw")))
    assert payload.create_upload_url.typename__ == "CreateUploadUrlSuccess"
    async with httpx.AsyncClient() as plain:
        assert (await plain.put(payload.create_upload_url.url, content=BODY)).status_code == 200
    return {"prefix": "dir/", "url_expires_in_seconds": 60}


async def upload_target(_w: World, c: ImsClient) -> dict[str, Any]:
    return {"input": CreateUploadUrlInput(bucket=await bucket(c), key="disk.qcow2", expiresInSeconds=600)}


def objects_listed(buckets: Any, w: World) -> bool:
    [only] = buckets
    [edge] = only.objects.edges
    return bool(edge.node.key == "dir/a.raw" and edge.node.size_bytes == len(BODY)
                and edge.node.checksum == "sha256:" + hashlib.sha256(BODY).hexdigest()
                and edge.node.download_url.startswith(w.server.url))


async def share_target(w: World, _c: ImsClient) -> dict[str, Any]:
    other, _ = await make_account(w.db, "share-target")
    return {"input": ShareImagesInput(imageIds=[w.image.id], accountIds=[other.id])}


async def shared_pair(w: World, _c: ImsClient) -> dict[str, Any]:
    other, _ = await make_account(w.db)
    await share(w.db, w.image, other, "ACCEPTED")
    return {"input": UnshareImagesInput(imageIds=[w.image.id], accountIds=[other.id])}


async def shared_with_user(w: World, _c: ImsClient) -> dict[str, Any]:
    other, _ = await make_account(w.db)
    image = await w.image_of(other)
    await share(w.db, image, w.user, "PENDING")
    return {"input": UpdateImageMembershipInput(imageIds=[image.id], status=MemberStatus.ACCEPTED)}
def queued_copy(p: Any, w: World) -> bool:
    [copy] = p.images
    return bool(p.job.type_ == "REPLICATE_IMAGE" and p.job.status == "INIT" and copy.typename__ == "PrivateImage"
                and (copy.name, copy.status, copy.owner.id) == ("copy-1", "QUEUED", w.user.id)
                and (copy.origin.type_, copy.origin.ref) == ("IMAGE", w.image.id))


def each_member(images: Any, _w: World) -> bool:
    return {e.node.typename__ for e in images.edges} == {"PrivateImage", "PublicImage", "SharedImage"}


async def user_server(w: World, c: ImsClient) -> Any:
    """A server of the user (a 1 GiB system disk from a quick image, and a 2 GiB data disk)."""
    image = await make_image_with_data(w.db, w.server.settings, w.user, b"boot" * 4096)
    made = await c.create_server(input=CreateServerInput(name="web-1", imageId=image.id,
                                                         dataDisks=[DataDiskInput(sizeGb=2)]))
    assert made.create_server.typename__ == "CreateServerSuccess"
    return made.create_server.server


async def new_server_input(w: World, _c: ImsClient) -> dict[str, Any]:
    image = await make_image_with_data(w.db, w.server.settings, w.user, b"boot" * 4096)
    return {"input": CreateServerInput(name="web-2", imageId=image.id, systemDiskGb=5)}


async def full_ecs_image(w: World, c: ImsClient) -> Any:
    """A FULL_ECS image of a server of the user, QUEUED (these tests run no worker), with its backup."""
    server = await user_server(w, c)
    made = await c.create_image_from_server(input=CreateImageFromServerInput(serverId=server.id, name="full",
                                                                             kind=ImageKind.FULL_ECS))
    assert made.create_image_from_server.typename__ == "ImageJobSuccess"
    return made.create_image_from_server.images[0]


async def kept_backup(w: World, c: ImsClient) -> dict[str, Any]:
    """The backup of a FULL_ECS image the user deleted without it (saved first: a QUEUED image
    cannot be deleted, and no worker runs its job here)."""
    image = await full_ecs_image(w, c)
    async with w.db.uow() as uow:
        saved = await uow.compute.advance_image(image.id, ("QUEUED",), {"status": "ACTIVE"})
        await uow.commit()
    assert saved
    deleted = await c.delete_images(input=DeleteImagesInput(ids=[image.id], deleteBackups=False))
    assert deleted.delete_images.typename__ == "DeleteImagesSuccess"
    return {"input": DeleteBackupsInput(ids=[image.backup.id])}


async def a_full_ecs_image(w: World, c: ImsClient) -> dict[str, Any]:
    await full_ecs_image(w, c)
    return {"first": 10}


async def stopped_server(w: World, c: ImsClient) -> dict[str, Any]:
    """A server of the user, stopped."""
    server = await user_server(w, c)
    stopped = await c.stop_server(input=StopServerInput(id=server.id))
    assert stopped.stop_server.typename__ == "StopServerSuccess"
    return {"input": StartServerInput(id=server.id)}


async def kept_volume(w: World, c: ImsClient) -> dict[str, Any]:
    """The data disk of a server of the user, kept (detached) when the server was deleted."""
    server = await user_server(w, c)
    deleted = await c.delete_server(input=DeleteServerInput(id=server.id, deleteVolumes=False))
    assert deleted.delete_server.typename__ == "DeleteServerSuccess"
    return {"input": DeleteVolumesInput(ids=[server.volumes[1].id])}


def with_server(make: Callable[[Any], dict[str, Any]]) -> Kwargs:
    async def kwargs(w: World, c: ImsClient) -> dict[str, Any]:
        return make(await user_server(w, c))

    return kwargs


def given(args: Callable[[World], dict[str, Any]]) -> Kwargs:
    async def kwargs(w: World, _c: ImsClient) -> dict[str, Any]:
        return args(w)

    return kwargs


def given_input(make: Callable[[World], Any]) -> Kwargs:
    return given(lambda w: {"input": make(w)})


async def user_key(c: ImsClient, alias: str = "ops-key") -> str:
    made = await c.create_kms_key(input=CreateKmsKeyInput(alias=alias))
    assert made.create_kms_key.typename__ == "KmsKeySuccess"
    return str(made.create_kms_key.key.id)


def with_key(make: Callable[[str, World], Any]) -> Kwargs:
    async def kwargs(w: World, c: ImsClient) -> dict[str, Any]:
        return {"input": make(await user_key(c), w)}

    return kwargs


def a_key_then(make: Callable[[], dict[str, Any]]) -> Kwargs:
    async def kwargs(w: World, c: ImsClient) -> dict[str, Any]:
        await user_key(c)
        return make()

    return kwargs


async def disabled_key(w: World, c: ImsClient) -> dict[str, Any]:
    key = await user_key(c)
    await c.disable_kms_key(input=KmsKeyStateInput(keyId=key))
    return {"input": KmsKeyStateInput(keyId=key)}


async def pending_key(w: World, c: ImsClient) -> dict[str, Any]:
    key = await user_key(c)
    await c.schedule_kms_key_deletion(input=KmsKeyStateInput(keyId=key, pendingDays=7))
    return {"input": KmsKeyStateInput(keyId=key)}


async def granted_key(w: World, c: ImsClient) -> dict[str, Any]:
    key = await user_key(c)
    made = await c.create_kms_grant(input=CreateKmsGrantInput(
        keyId=key, granteeAccountId=w.admin.id, operations=[KmsGrantOperation.DECRYPT_DATA_KEY]))
    return {"input": RevokeKmsGrantInput(keyId=key, grantId=made.create_kms_grant.grant.id)}  # type: ignore[union-attr]


async def uploaded_disk(w: World, c: ImsClient) -> dict[str, Any]:
    await bucket_with_object(w, c)
    return {"input": ImportImageInput(
        bucket="my-bucket", key="dir/a.raw", name="imported", minDiskGb=1,
        os=OperatingSystemInput(type=OsType.LINUX, platform="Debian", version="Debian 12"))}


async def a_job(w: World, c: ImsClient) -> dict[str, Any]:
    made = await c.replicate_image(input=ReplicateImageInput(imageId=w.image.id, name="for-jobs"))
    return {"id": made.replicate_image.job.id}  # type: ignore[union-attr]


CASES: dict[str, Case] = {
    "KmsKeys": Case(a_key_then(lambda: {"first": 10}), lambda r: r.kms_keys, None,
                    lambda p, w: [e.node.alias for e in p.edges] == ["ops-key"]),
    "CreateKmsKey": Case(given_input(lambda w: CreateKmsKeyInput(alias="app/data", description="data disks")),
                         lambda r: r.create_kms_key, "KmsKeySuccess",
                         lambda p, w: (p.key.alias, p.key.state, p.key.is_default) == ("app/data", "ENABLED", False)),
    "DisableKmsKey": Case(with_key(lambda k, w: KmsKeyStateInput(keyId=k)), lambda r: r.disable_kms_key,
                          "KmsKeySuccess", lambda p, w: p.key.state == "DISABLED"),
    "EnableKmsKey": Case(disabled_key, lambda r: r.enable_kms_key, "KmsKeySuccess", lambda p, w: p.key.state == "ENABLED"),
    "ScheduleKmsKeyDeletion": Case(with_key(lambda k, w: KmsKeyStateInput(keyId=k, pendingDays=30)),
                                   lambda r: r.schedule_kms_key_deletion, "KmsKeySuccess",
                                   lambda p, w: p.key.state == "PENDING_DELETION" and p.key.deletion_date is not None),
    "CancelKmsKeyDeletion": Case(pending_key, lambda r: r.cancel_kms_key_deletion, "KmsKeySuccess",
                                 lambda p, w: (p.key.state, p.key.deletion_date) == ("DISABLED", None)),
    "CreateKmsGrant": Case(with_key(lambda k, w: CreateKmsGrantInput(
        keyId=k, granteeAccountId=w.admin.id, operations=[KmsGrantOperation.DESCRIBE_KEY])),
        lambda r: r.create_kms_grant, "KmsGrantSuccess", lambda p, w: p.grant.grantee.id == w.admin.id),
    "RevokeKmsGrant": Case(granted_key, lambda r: r.revoke_kms_grant, "RevokeKmsGrantSuccess",
                           lambda p, w: p.revoked_id.startswith("grt")),
    "ImportImage": Case(uploaded_disk, lambda r: r.import_image, "ImageJobSuccess",
                        lambda p, w: p.job.type_ == "IMPORT_IMAGE" and p.images[0].status == "QUEUED"),
    "Job": Case(a_job, lambda r: r.job, None, lambda p, w: p.type_ == "REPLICATE_IMAGE" and p.object_ is None),
    "Jobs": Case(given(lambda w: {"filter_": JobFilter(imageId=w.image.id)}), lambda r: r.jobs, None,
                 lambda p, w: p.total_count == 0),
    "Node": Case(given(lambda w: {"id": w.image.id}), lambda r: r.node, None,
                 lambda p, w: (p.typename__, p.id) == ("PrivateImage", w.image.id)),
    "Health": Case(no_args, lambda r: r.health, None, lambda p, w: p.ok is True and bool(p.version), caller=None),
    "Regions": Case(no_args, lambda r: r.regions, None, lambda p, w: [(x.id, x.is_default) for x in p]
                    == [("region-1", True)]),
    "Viewer": Case(no_args, lambda r: r.viewer, None, lambda p, w: p.account.id == w.user.id
                   and {q.resource for q in p.quotas} == set(QuotaResource) and len(p.api_tokens) == 1),
    "Accounts": Case(given(lambda w: {"first": 10}), lambda r: r.accounts, None,
                     lambda p, w: p.total_count == 2 and {e.node.id for e in p.edges} == {w.admin.id, w.user.id},
                     caller="admin"),
    "CreateAccount": Case(
        given_input(lambda w: CreateAccountInput(name="carol")), lambda r: r.create_account, "CreateAccountSuccess",
        lambda p, w: p.account.name == "carol" and p.account.role == "USER" and bool(p.token), caller="admin"),
    "CreateApiToken": Case(
        given_input(lambda w: CreateApiTokenInput(name="ci", expiresInDays=30)), lambda r: r.create_api_token,
        "CreateApiTokenSuccess", lambda p, w: p.api_token.name == "ci" and p.api_token.expires_at is not None),
    "RevokeApiToken": Case(spare_token, lambda r: r.revoke_api_token, "RevokeApiTokenSuccess",
                           lambda p, w: p.revoked_id.startswith("tok")),
    "SetQuota": Case(
        given_input(lambda w: SetQuotaInput(accountId=w.user.id, resource=QuotaResource.PRIVATE_IMAGES, limit=5)),
        lambda r: r.set_quota, "SetQuotaSuccess", lambda p, w: p.quota.limit == 5, caller="admin"),
    "Image": Case(given(lambda w: {"id": w.image.id}), lambda r: r.image, "PrivateImage",
                  lambda p, w: p.id == w.image.id and p.owner.id == w.user.id),
    "Images": Case(catalog, lambda r: r.images, None, each_member),
    "UpdateImage": Case(
        given_input(lambda w: UpdateImageInput(id=w.image.id, name="renamed", expectedVersion=w.image.version)),
        lambda r: r.update_image, "UpdateImageSuccess",
        lambda p, w: p.image.name == "renamed" and p.image.version == w.image.version + 1),
    "SetImageProtection": Case(
        given_input(lambda w: SetImageProtectionInput(id=w.image.id, protected=True)),
        lambda r: r.set_image_protection, "UpdateImageSuccess", lambda p, w: p.image.protected is True),
    "PublishImage": Case(admins_image, lambda r: r.publish_image, "UpdateImageSuccess",
                         lambda p, w: p.image.typename__ == "PublicImage", caller="admin"),
    "DeleteImages": Case(given_input(lambda w: DeleteImagesInput(ids=[w.image.id])), lambda r: r.delete_images,
                         "DeleteImagesSuccess", lambda p, w: p.deleted_ids == [w.image.id]),
    "AddImageTags": Case(
        given_input(lambda w: ImageTagsInput(imageId=w.image.id, tags=[TagInput(key="env", value="prod")])),
        lambda r: r.add_image_tags, "UpdateImageSuccess",
        lambda p, w: [(t.key, t.value) for t in p.image.tags] == [("env", "prod")]),
    "RemoveImageTags": Case(tagged_image, lambda r: r.remove_image_tags, "UpdateImageSuccess",
                            lambda p, w: [(t.key, t.value) for t in p.image.tags] == [("team", "core")]),
    "ShareImages": Case(share_target, lambda r: r.share_images, "ShareImagesSuccess",
                        lambda p, w: [(m.image_id, m.account.name, m.status) for m in p.members]
                        == [(w.image.id, "share-target", MemberStatus.PENDING)]),
    "UnshareImages": Case(shared_pair, lambda r: r.unshare_images, "UnshareImagesSuccess",
                          lambda p, w: p.removed == 1),
    "UpdateImageMembership": Case(
        shared_with_user, lambda r: r.update_image_membership, "UpdateImageMembershipSuccess",
        lambda p, w: [(m.account.id, m.status) for m in p.members] == [(w.user.id, MemberStatus.ACCEPTED)]),
    "Buckets": Case(bucket_with_object, lambda r: r.buckets, None, objects_listed),
    "CreateBucket": Case(given_input(lambda w: CreateBucketInput(name="images-2024")), lambda r: r.create_bucket,
                         "CreateBucketSuccess", lambda p, w: (p.bucket.name, p.bucket.region)
                         == ("images-2024", "region-1")),
    "ReplicateImage": Case(given_input(lambda w: ReplicateImageInput(imageId=w.image.id, name="copy-1")),
                           lambda r: r.replicate_image, "ImageJobSuccess", queued_copy),
    "ExportImage": Case(export_target, lambda r: r.export_image, "ExportJobSuccess",
                        lambda p, w: (p.job.type_, p.job.status) == ("EXPORT_IMAGE", "INIT")),
    "ExportImageList": Case(given_input(lambda w: ExportImageListInput(visibility=ImageVisibility.PUBLIC)),
                            lambda r: r.export_image_list, "ExportJobSuccess",
                            lambda p, w: (p.job.type_, p.job.status) == ("EXPORT_IMAGE_LIST", "INIT")),
    "CreateUploadUrl": Case(upload_target, lambda r: r.create_upload_url, "CreateUploadUrlSuccess",
                            lambda p, w: p.url.startswith(w.server.url)),
    "Servers": Case(with_server(lambda s: {"first": 10}), lambda r: r.servers, None,
                    lambda p, w: p.total_count == 1 and [v.role for v in p.edges[0].node.volumes] == ["SYSTEM", "DATA"]),
    "Server": Case(with_server(lambda s: {"id": s.id}), lambda r: r.server, None,
                   lambda p, w: p.status == "RUNNING" and p.volumes[1].size_gb == 2),
    "Volume": Case(with_server(lambda s: {"id": s.volumes[1].id}), lambda r: r.volume, None,
                   lambda p, w: p.role == "DATA" and p.server_id is not None and p.source_image_id is None),
    "CreateServer": Case(new_server_input, lambda r: r.create_server, "CreateServerSuccess",
                         lambda p, w: p.server.volumes[0].size_gb == 5 and p.server.source_image_id is not None),
    "DeleteServer": Case(with_server(lambda s: {"input": DeleteServerInput(id=s.id, deleteVolumes=False)}),
                         lambda r: r.delete_server, "DeleteServerSuccess", lambda p, w: p.deleted_id.startswith("srv")),
    "StopServer": Case(with_server(lambda s: {"input": StopServerInput(id=s.id)}), lambda r: r.stop_server,
                       "StopServerSuccess", lambda p, w: p.server.status == "STOPPED" and len(p.server.volumes) == 2),
    "StartServer": Case(stopped_server, lambda r: r.start_server, "StartServerSuccess",
                        lambda p, w: p.server.status == "RUNNING" and len(p.server.volumes) == 2),
    "Volumes": Case(with_server(lambda s: {"first": 10}), lambda r: r.volumes, None,
                    lambda p, w: p.total_count == 2 and {e.node.role for e in p.edges} == {"SYSTEM", "DATA"}
                    and {e.node.server_id for e in p.edges} == {p.edges[0].node.server_id} != {None}),
    "DeleteVolumes": Case(kept_volume, lambda r: r.delete_volumes, "DeleteVolumesSuccess",
                          lambda p, w: len(p.deleted_ids) == 1 and p.deleted_ids[0].startswith("vol")),
    "CreateVolume": Case(given_input(lambda w: CreateVolumeInput(name="scratch", sizeGb=100)),
                         lambda r: r.create_volume, "CreateVolumeSuccess",
                         lambda p, w: (p.volume.size_gb, p.volume.server_id) == (100, None)),
    "CreateImageFromServer": Case(
        with_server(lambda s: {"input": CreateImageFromServerInput(serverId=s.id, name="web", kind=ImageKind.FULL_ECS)}),
        lambda r: r.create_image_from_server, "ImageJobSuccess",
        lambda p, w: p.job.type_ == "CREATE_FULL_ECS_IMAGE" and [d.role for d in p.images[0].disks] == ["SYSTEM", "DATA"]
        and p.images[0].backup.server_id == p.images[0].origin.ref),
    "Backups": Case(a_full_ecs_image, lambda r: r.backups, None,
                    lambda p, w: p.total_count == 1 and p.edges[0].node.size_bytes == 3 * 1024**3
                    and p.edges[0].node.image is not None and p.edges[0].node.image.status == "QUEUED"),
    "DeleteBackups": Case(kept_backup, lambda r: r.delete_backups, "DeleteBackupsSuccess",
                          lambda p, w: len(p.deleted_ids) == 1 and p.deleted_ids[0].startswith("bak")),
    "CreateImageFromVolume": Case(
        with_server(lambda s: {"input": CreateImageFromVolumeInput(volumeId=s.volumes[1].id, name="data")}),
        lambda r: r.create_image_from_volume, "ImageJobSuccess",
        lambda p, w: p.job.type_ == "CREATE_IMAGE_FROM_VOLUME" and p.images[0].kind == "DATA_DISK"),
}


@pytest.fixture
async def world(db: Database, live_server: LiveServer) -> World:
    user, token = await make_account(db)
    async with db.uow() as uow:
        admin = await uow.accounts.get_by_name(live_server.settings.admin_name)
    assert admin is not None
    return World(db, live_server, admin, user, token, await make_image(db, user))


@pytest.fixture
def client_for(world: World) -> Callable[[str | None], ImsClient]:
    def make(caller: str | None) -> ImsClient:
        token = {"user": world.user_token, "admin": world.server.settings.admin_token, None: None}[caller]
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return ImsClient(url=f"{world.server.url}/graphql", headers=headers)

    return make


@pytest.mark.parametrize("operation", sorted(CASES))
async def test_operation_runs_through_the_generated_client(
    operation: str, world: World, client_for: Callable[[str | None], ImsClient]
) -> None:
    case = CASES[operation]
    async with client_for(case.caller) as client:
        kwargs = await case.kwargs(world, client)
        result = await getattr(client, method_name(operation))(**kwargs)
    payload = case.payload(result)
    if case.typename is not None:
        assert payload.typename__ == case.typename, payload
    assert case.check(payload, world), payload


async def test_job_updated_subscription_through_the_generated_client(
    world: World, client_for: Callable[[str | None], ImsClient]
) -> None:
    """The generated client follows jobUpdated over graphql-transport-ws (token in the
    connection_init payload) until the job ends; here a replication no worker runs is
    seen in INIT, then the subscription is closed by the client."""
    async with client_for("user") as client:
        made = await client.replicate_image(input=ReplicateImageInput(imageId=world.image.id, name="followed"))
        job_id = made.replicate_image.job.id  # type: ignore[union-attr]
    ws = ImsClient(url=f"{world.server.url}/graphql", ws_url=world.server.url.replace("http", "ws", 1) + "/graphql",
                   ws_connection_init_payload={"authorization": f"Bearer {world.user_token}"})
    updates = ws.job_updated(id=job_id)
    first = await updates.__anext__()
    assert (first.job_updated.id, first.job_updated.type_, first.job_updated.status) == (job_id, "REPLICATE_IMAGE", "INIT")
    assert isinstance(updates, AsyncGenerator)  # the generated client types it AsyncIterator
    await updates.aclose()
