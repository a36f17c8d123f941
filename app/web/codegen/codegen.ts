// Generates ./generated/ (gitignored) from the committed SDL and operations: no server needed.
// `make ts-client`; tests/clients/test_ts_client.py runs it.
import type { CodegenConfig } from "@graphql-codegen/cli";

const config: CodegenConfig = {
  schema: "../../../graphql/schema.graphql",
  documents: ["../../../graphql/operations/*.graphql"],
  ignoreNoDocuments: false,
  generates: {
    "./generated/": {
      preset: "client",
      presetConfig: {
        fragmentMasking: false,
      },
      config: {
        enumsAsTypes: true,
        useTypeImports: true,
        strictScalars: true,
        scalars: {
          BigInt: "number",
          DateTime: "string",
        },
      },
    },
  },
};

export default config;
