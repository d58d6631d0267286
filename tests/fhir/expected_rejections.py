"""The official R4 examples that are genuinely invalid under the R4 definitions.

``hl7.fhir.r4.examples@4.0.1`` ships 5,306 resources; these few break a rule of
the R4 structure definitions themselves (cardinality, reference targets,
``Resource.id`` length, or narrative invariant txt-2).  Each reason reads
``"<FHIRPath of the offending element>: <why>"``, so a test can check that the
validator rejects the example for *that* reason and not another (the FHIRPath is
the ``expression`` of one of the validator's issues).  Anything a
validator rejects that is not listed here is a validator bug, not an example bug.

Reused by the store/import tests: a bulk load of the examples must reject exactly these.
"""

from __future__ import annotations

_TXT2 = "narrative div has no non-whitespace content (invariant txt-2)"
_SP_BASE = "SearchParameter.base: 1..* but missing (an extension search parameter with no base resource)"
_IG = "ImplementationGuide.name: 1..1 but missing (ImplementationGuide.status, also 1..1, is missing too)"

EXPECTED_REJECTIONS: dict[str, str] = {
    # Narrative with an empty <div> (txt-2: the narrative SHALL have some non-whitespace content).
    "ActivityDefinition-blood-tubes-supply.json": "ActivityDefinition.text.div: " + _TXT2,
    "ActivityDefinition-heart-valve-replacement.json": "ActivityDefinition.text.div: " + _TXT2,
    "EventDefinition-example.json": "EventDefinition.text.div: " + _TXT2,
    "Questionnaire-zika-virus-exposure-assessment.json": "Questionnaire.text.div: " + _TXT2 + " (only an empty <pre>)",
    # Reference to a resource type the element does not allow.
    "DeviceMetric-example.json": "DeviceMetric.parent.reference: 'DeviceDefinition/dc102', "
    "but DeviceMetric.parent may refer only to Device",
    "DeviceUseStatement-example.json": "DeviceUseStatement.reasonReference[0].reference: 'Procedure/example', "
    "but reasonReference allows Condition, Observation, DiagnosticReport, DocumentReference, Media",
    "MedicationRequest-medrx0301.json": "MedicationRequest.dispenseRequest.performer.reference: "
    "'Practitioner/f001', but dispenseRequest.performer may refer only to Organization",
    "Observation-clinical-gender.json": "Observation.performer[0].reference: 'Encounter/example', "
    "but Observation.performer does not allow Encounter",
    # Mandatory elements missing.
    "Questionnaire-qs1.json": "Questionnaire.item[0].item[0].linkId: Questionnaire.item.linkId is 1..1 "
    "but 32 nested items have no linkId",
    "ImplementationGuide-fhir.json": _IG,
    "ig-r4.json": _IG + " (the same guide as ImplementationGuide-fhir.json)",
    "SearchParameter-codesystem-extensions-CodeSystem-author.json": _SP_BASE,
    "SearchParameter-codesystem-extensions-CodeSystem-effective.json": _SP_BASE,
    "SearchParameter-codesystem-extensions-CodeSystem-end.json": _SP_BASE,
    "SearchParameter-codesystem-extensions-CodeSystem-keyword.json": _SP_BASE,
    "SearchParameter-codesystem-extensions-CodeSystem-workflow.json": _SP_BASE,
    "SearchParameter-valueset-extensions-ValueSet-author.json": _SP_BASE,
    "SearchParameter-valueset-extensions-ValueSet-effective.json": _SP_BASE,
    "SearchParameter-valueset-extensions-ValueSet-end.json": _SP_BASE,
    "SearchParameter-valueset-extensions-ValueSet-keyword.json": _SP_BASE,
    "SearchParameter-valueset-extensions-ValueSet-workflow.json": _SP_BASE,
    # Resource.id longer than the 64 characters an id may have.
    "SearchParameter-questionnaireresponse-extensions-QuestionnaireResponse-item-subject.json": (
        "SearchParameter.id: 'questionnaireresponse-extensions-QuestionnaireResponse-item-subject' "
        "has 67 characters; an id has at most 64"
    ),
}
