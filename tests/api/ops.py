"""GraphQL documents and small helpers the API tests share."""

from __future__ import annotations

from typing import Any

from tests.conftest import GraphQLClient

IMAGE_FIELDS = """
  __typename
  ... on ImageBase {
    id name description kind status region version protected minRamMb maxRamMb bootMode
    nicMultiQueue sriovDriver sizeBytes encrypted kmsKeyId createdAt updatedAt tags { key value }
  }
  ... on PrivateImage { owner { id name } members { totalCount edges { node { account { id name } status } } } }
  ... on SharedImage { owner { id name } membership { imageId account { id name } status } }
"""

#: The error members of each mutation's payload union (a fragment on any other type is invalid).
PAYLOAD_ERRORS: dict[str, tuple[str, ...]] = {
    "updateImage": ("NotFoundError", "ValidationError", "ForbiddenError", "ConflictError", "NotSupportedError"),
    "setImageProtection": ("NotFoundError", "ForbiddenError"),
    "publishImage": ("NotFoundError", "ForbiddenError", "ConflictError", "NotSupportedError"),
    "addImageTags": ("NotFoundError", "ValidationError", "ForbiddenError", "LimitExceededError"),
    "removeImageTags": ("NotFoundError", "ValidationError", "ForbiddenError", "LimitExceededError"),
    "deleteImages": ("NotFoundError", "ForbiddenError", "ConflictError", "ValidationError"),
    "createAccount": ("ValidationError", "ForbiddenError", "ConflictError"),
    "createApiToken": ("ValidationError",),
    "revokeApiToken": ("NotFoundError",),
    "setQuota": ("NotFoundError", "ValidationError", "ForbiddenError"),
}
INPUT_TYPES = {"addImageTags": "ImageTagsInput"}
_EXTRA = {"ValidationError": "field", "LimitExceededError": "limit", "NotFoundError": "resourceId"}


def error_fields(field: str) -> str:
    extras = " ".join(f"... on {t} {{ {_EXTRA[t]} }}" for t in PAYLOAD_ERRORS[field] if t in _EXTRA)
    return f"__typename ... on UserError {{ code message }} {extras}"

GET_IMAGE = f"query($id: ID!) {{ image(id: $id) {{ {IMAGE_FIELDS} }} }}"
GET_NODE = """query($id: ID!) { node(id: $id) { __typename id
  ... on ImageBase { name } ... on Account { name role } } }"""
LIST_IMAGES = """
query($filter: ImageFilter, $orderBy: ImageOrder, $first: Int, $after: String) {
  images(filter: $filter, orderBy: $orderBy, first: $first, after: $after) {
    totalCount
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    edges { cursor node { __typename ... on ImageBase { id name sizeBytes status createdAt } } }
  }
}
"""


async def get_image(client: GraphQLClient, image_id: str) -> dict[str, Any] | None:
    data = await client.execute(GET_IMAGE, {"id": image_id})
    return data["image"]  # type: ignore[no-any-return]


async def list_images(client: GraphQLClient, **variables: Any) -> dict[str, Any]:
    data = await client.execute(LIST_IMAGES, variables)
    return data["images"]  # type: ignore[no-any-return]


async def list_ids(client: GraphQLClient, **variables: Any) -> list[str]:
    variables.setdefault("first", 1000)
    return [e["node"]["id"] for e in (await list_images(client, **variables))["edges"]]


async def mutate(client: GraphQLClient, field: str, input: dict[str, Any], success: str) -> dict[str, Any]:
    """Run `field(input:)` and return its payload: `success` selects the success type's fields."""
    input_type = INPUT_TYPES.get(field, f"{field[0].upper()}{field[1:]}Input")
    doc = f"""mutation($input: {input_type}!) {{
      {field}(input: $input) {{ {error_fields(field)} {success} }}
    }}"""
    data = await client.execute(doc, {"input": input})
    return data[field]  # type: ignore[no-any-return]


IMAGE_SUCCESS = f"... on UpdateImageSuccess {{ image {{ {IMAGE_FIELDS} }} }}"


async def update_image(client: GraphQLClient, **input: Any) -> dict[str, Any]:
    return await mutate(client, "updateImage", input, IMAGE_SUCCESS)


async def add_tags(client: GraphQLClient, image_id: str, tags: dict[str, str]) -> dict[str, Any]:
    return await mutate(client, "addImageTags",
                        {"imageId": image_id, "tags": [{"key": k, "value": v} for k, v in tags.items()]},
                        IMAGE_SUCCESS)


async def remove_tags(client: GraphQLClient, image_id: str, keys: list[str]) -> dict[str, Any]:
    return await mutate(client, "removeImageTags", {"imageId": image_id, "keys": keys}, IMAGE_SUCCESS)


async def set_protection(client: GraphQLClient, image_id: str, protected: bool) -> dict[str, Any]:
    return await mutate(client, "setImageProtection", {"id": image_id, "protected": protected}, IMAGE_SUCCESS)


async def publish(client: GraphQLClient, image_id: str) -> dict[str, Any]:
    return await mutate(client, "publishImage", {"id": image_id}, IMAGE_SUCCESS)


async def delete_images(client: GraphQLClient, ids: list[str]) -> dict[str, Any]:
    return await mutate(client, "deleteImages", {"ids": ids}, "... on DeleteImagesSuccess { deletedIds }")


def error(typename: str, code: str, **extra: Any) -> dict[str, Any]:
    """The payload an error type answers with, for comparison (message excluded)."""
    return {"__typename": typename, "code": code, **extra}


def without_message(payload: dict[str, Any]) -> dict[str, Any]:
    assert payload.get("message"), payload
    return {k: v for k, v in payload.items() if k != "message"}
