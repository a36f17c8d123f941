"""The GraphQL layer (Strawberry): types, loaders, queries and mutations per feature.

Resolvers are thin: parse input, call one service function, map the result or error.
"""
