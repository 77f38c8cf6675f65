/** OHIF Viewer (npm @ohif/app, its built dist/) configured for the spine-xray PACS: one DICOMweb data source at
 * this page's own origin under /dicom-web, which the server in front of OHIF forwards to Orthanc (nginx in the
 * compose `pacs` profile, tests/pacs/spine_ohif_testlib.py in the tests). Same origin: no CORS, and the PACS
 * password stays in the proxy, never in the browser. Replaces dist/app-config.js. */
window.config = {
  routerBasename: null,
  extensions: [],
  modes: [],
  customizationService: {},
  showStudyList: true,
  maxNumberOfWebWorkers: 2,
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: false,
  showLoadingIndicator: true,
  strictZSpacingForVolumeViewport: true,
  investigationalUseDialog: { option: "never" },
  defaultDataSourceName: "orthanc",
  dataSources: [
    {
      namespace: "@ohif/extension-default.dataSourcesModule.dicomweb",
      sourceName: "orthanc",
      configuration: {
        friendlyName: "spine-xray Orthanc",
        name: "orthanc",
        wadoUriRoot: window.location.origin + "/wado",
        qidoRoot: window.location.origin + "/dicom-web",
        wadoRoot: window.location.origin + "/dicom-web",
        qidoSupportsIncludeField: false,
        imageRendering: "wadors",
        thumbnailRendering: "wadors",
        enableStudyLazyLoad: true,
        supportsFuzzyMatching: false,
        supportsWildcard: true,
        staticWado: false,
        singlepart: "bulkdata,video",
        bulkDataURI: { enabled: true, relativeResolution: "studies" },
        omitQuotationForMultipartRequest: true,
      },
    },
  ],
};
