// Parse a TID 1500 SR the way OHIF does and print what a viewer would draw.
//
// Usage: node parse_sr.js FILE.dcm  ->  JSON on stdout
//
// 1. dcmjs reads and naturalizes the file (OHIF's SR loading path).
// 2. dcmjs's Cornerstone3D MeasurementReport.generateToolState walks the
//    report (template 1500, "Imaging Measurements", each "Measurement
//    Group" and its "Tracking Identifier"); its getToolClass hook sees every
//    group.  Its bundled tool classes expect Cornerstone's own encoding (the
//    SCOORD under a NUM), so the hook maps no tool class and only records.
// 3. Each group is then read as OHIF's cornerstone-dicom-sr extension reads
//    TID 1410: groups merged by Tracking Unique Identifier, the first
//    group-level SCOORD is the graphic, with its referenced SOP instance and
//    frame; NUM items become labels.
"use strict";

const fs = require("fs");
const dcmjs = require("dcmjs");

const IMAGING_MEASUREMENTS = "126010";
const MEASUREMENT_GROUP = "125007";
const TRACKING_IDENTIFIER = "112039";
const TRACKING_UID = "112040";

function asArray(value) {
  if (value === undefined || value === null) return [];
  return Array.isArray(value) ? value : [value];
}

function codeValue(item) {
  return asArray(item.ConceptNameCodeSequence)[0]?.CodeValue;
}

function readReport(path) {
  const buffer = fs.readFileSync(path);
  const arrayBuffer = buffer.buffer.slice(buffer.byteOffset, buffer.byteOffset + buffer.byteLength);
  const dicomData = dcmjs.data.DicomMessage.readFile(arrayBuffer);
  return dcmjs.data.DicomMetaDictionary.naturalizeDataset(dicomData.dict);
}

function groupsSeenByAdapter(dataset) {
  const seen = [];
  const hooks = {
    getToolClass: (group) => {
      seen.push(group);
      return undefined;
    },
  };
  dcmjs.adapters.Cornerstone3D.MeasurementReport.generateToolState(dataset, {}, (id, p) => p, {}, hooks);
  return seen;
}

function mergeByTrackingUid(groups) {
  const merged = new Map();
  for (const group of groups) {
    const items = asArray(group.ContentSequence);
    const uidItem = items.find((item) => codeValue(item) === TRACKING_UID);
    const key = uidItem ? uidItem.UID : `group-${merged.size}`;
    merged.set(key, (merged.get(key) || []).concat(items));
  }
  return merged;
}

function measurementFrom(trackingUid, items) {
  const graphic = items.find((item) => item.ValueType === "SCOORD");
  const identifier = items.find((item) => codeValue(item) === TRACKING_IDENTIFIER);
  const labels = items
    .filter((item) => item.ValueType === "NUM")
    .map((item) => {
      const measured = asArray(item.MeasuredValueSequence)[0];
      return {
        code: codeValue(item),
        meaning: asArray(item.ConceptNameCodeSequence)[0].CodeMeaning,
        value: measured ? Number(measured.NumericValue) : null,
        unit: measured ? asArray(measured.MeasurementUnitsCodeSequence)[0].CodeValue : null,
      };
    });
  const result = {
    trackingUid,
    trackingIdentifier: identifier ? identifier.TextValue : null,
    labels,
    graphic: null,
  };
  if (graphic) {
    const reference = asArray(asArray(graphic.ContentSequence)[0].ReferencedSOPSequence)[0];
    result.graphic = {
      graphicType: graphic.GraphicType,
      points: Array.from(graphic.GraphicData),
      referencedSOPInstanceUID: reference.ReferencedSOPInstanceUID,
      referencedFrameNumber: asArray(reference.ReferencedFrameNumber).map(Number),
    };
  }
  return result;
}

function main() {
  const dataset = readReport(process.argv[2]);
  const adapterGroups = groupsSeenByAdapter(dataset);
  const imaging = asArray(dataset.ContentSequence).find(
    (item) => codeValue(item) === IMAGING_MEASUREMENTS,
  );
  const groups = asArray(imaging.ContentSequence).filter(
    (item) => codeValue(item) === MEASUREMENT_GROUP,
  );
  const measurements = [];
  for (const [uid, items] of mergeByTrackingUid(groups)) {
    measurements.push(measurementFrom(uid, items));
  }
  const output = {
    sopClassUID: dataset.SOPClassUID,
    templateIdentifier: asArray(dataset.ContentTemplateSequence)[0].TemplateIdentifier,
    adapterGroupCount: adapterGroups.length,
    imageLibraryPresent: asArray(dataset.ContentSequence).some((item) => codeValue(item) === "111028"),
    measurements,
  };
  process.stdout.write(JSON.stringify(output));
}

main();
