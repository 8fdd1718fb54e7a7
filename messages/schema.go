package messages

import _ "embed"

// RotationResultSchema is the JSON Schema (draft 2020-12) of RotationResult.
//
//go:embed schema/rotation-result.schema.json
var RotationResultSchema []byte

// EventSchema is the JSON Schema (draft 2020-12) of RotationEvent and StepEvent.
//
//go:embed schema/events.schema.json
var EventSchema []byte
