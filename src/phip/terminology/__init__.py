"""Terminology service (issue 6): Chinese code tables as FHIR CodeSystem/ValueSet/ConceptMap,
$lookup/$validate-code/$expand/$subsumes/$translate, local-to-standard mapping, CN profiles."""
