# Install layout and Debian packages (CPack DEB, docs/decisions.md 53). Two packages from one build:
#   moeatlas      (component cli): the CLI, its man pages and bash completion (both generated from the
#                 CLI's own --help at build time), the simulator presets and the demo data
#                 (/usr/share/moeatlas/{sim,demo})
#   moeatlas-gui  (component gui): the workbench with its desktop entry, icon, AppStream metainfo and
#                 the MIME type of *.atlas.h5, so a file manager opens atlases in the workbench
# `cpack` in a build directory writes both into <build>/packages/ (packaging/package-test.sh checks them).
# Version: the CMake project version. MOEATLAS_RELEASE_DATE is that version's date (AppStream release,
# Debian changelog): bump both together.
set(MOEATLAS_RELEASE_DATE "2026-12-07")
set(MOEATLAS_RELEASE_DATE_RFC2822 "Mon, 07 Dec 2026 00:00:00 +0000")
set(MOEATLAS_APP_ID org.moeatlas.Workbench)
set(_pkg ${PROJECT_SOURCE_DIR}/packaging)
set(_gen ${PROJECT_BINARY_DIR}/packaging)

set(CPACK_DEBIAN_PACKAGE_MAINTAINER "MoE Atlas maintainers <maintainers@moeatlas.org>")

# --- cli: man pages and bash completion from `moeatlas --help` ------------------------------------
add_custom_command(OUTPUT ${_gen}/man/moeatlas.1.gz
  COMMAND ${CMAKE_COMMAND} -E rm -rf ${_gen}/man
  COMMAND ${_pkg}/gen-man.sh $<TARGET_FILE:moeatlas> ${_gen}/man ${PROJECT_VERSION}
  DEPENDS moeatlas ${_pkg}/gen-man.sh
  COMMENT "Man pages from moeatlas --help" VERBATIM)
add_custom_command(OUTPUT ${_gen}/completion/moeatlas
  COMMAND ${CMAKE_COMMAND} -E make_directory ${_gen}/completion
  COMMAND ${_pkg}/gen-completion.sh $<TARGET_FILE:moeatlas> ${_gen}/completion/moeatlas
  DEPENDS moeatlas ${_pkg}/gen-completion.sh
  COMMENT "Bash completion from moeatlas --help" VERBATIM)
set(_docs_outputs ${_gen}/man/moeatlas.1.gz ${_gen}/completion/moeatlas)

# Per package: /usr/share/doc/<package>/{copyright,changelog.gz} (Debian policy 12.5, 12.7).
foreach(_deb moeatlas moeatlas-gui)
  set(MOEATLAS_DEB_NAME ${_deb})
  configure_file(${_pkg}/share/changelog.in ${_gen}/doc-src/${_deb}/changelog @ONLY)
  add_custom_command(OUTPUT ${_gen}/doc/${_deb}/changelog.gz
    COMMAND ${CMAKE_COMMAND} -E copy ${_gen}/doc-src/${_deb}/changelog ${_gen}/doc/${_deb}/changelog
    COMMAND gzip -9nf ${_gen}/doc/${_deb}/changelog
    DEPENDS ${_gen}/doc-src/${_deb}/changelog VERBATIM)
  list(APPEND _docs_outputs ${_gen}/doc/${_deb}/changelog.gz)
endforeach()

install(DIRECTORY ${_gen}/man/ DESTINATION share/man/man1 COMPONENT cli
        FILES_MATCHING PATTERN "moeatlas.1.gz" PATTERN "moeatlas-*.1.gz" PATTERN "moeatlas-gui.1.gz" EXCLUDE)
install(FILES ${_gen}/completion/moeatlas DESTINATION share/bash-completion/completions COMPONENT cli)
install(FILES ${_pkg}/share/copyright ${_gen}/doc/moeatlas/changelog.gz DESTINATION share/doc/moeatlas COMPONENT cli)
# The demo the README's pipeline runs (docs/demo-model.md): the model and its calibration/held-out text.
install(DIRECTORY ${PROJECT_SOURCE_DIR}/resources/demo/model ${PROJECT_SOURCE_DIR}/resources/demo/calibration
                  ${PROJECT_SOURCE_DIR}/resources/demo/heldout
        DESTINATION share/moeatlas/demo COMPONENT cli)
install(PROGRAMS ${_pkg}/demo-pipeline.sh DESTINATION share/moeatlas/demo RENAME run-demo.sh COMPONENT cli)

# --- gui: desktop entry, icon, AppStream, MIME type, man page -------------------------------------
if(MOEATLAS_BUILD_GUI)
  add_custom_command(OUTPUT ${_gen}/man/moeatlas-gui.1.gz
    COMMAND ${_pkg}/gen-man.sh $<TARGET_FILE:moeatlas-gui> ${_gen}/man ${PROJECT_VERSION}
    DEPENDS moeatlas-gui ${_pkg}/gen-man.sh ${_gen}/man/moeatlas.1.gz
    COMMENT "Man page from moeatlas-gui --help" VERBATIM)
  list(APPEND _docs_outputs ${_gen}/man/moeatlas-gui.1.gz)
  configure_file(${_pkg}/share/${MOEATLAS_APP_ID}.metainfo.xml ${_gen}/${MOEATLAS_APP_ID}.metainfo.xml @ONLY)
  install(FILES ${_gen}/man/moeatlas-gui.1.gz DESTINATION share/man/man1 COMPONENT gui)
  install(FILES ${_pkg}/share/${MOEATLAS_APP_ID}.desktop DESTINATION share/applications COMPONENT gui)
  install(FILES ${_pkg}/share/${MOEATLAS_APP_ID}.svg DESTINATION share/icons/hicolor/scalable/apps COMPONENT gui)
  install(FILES ${_gen}/${MOEATLAS_APP_ID}.metainfo.xml DESTINATION share/metainfo COMPONENT gui)
  install(FILES ${_pkg}/share/moeatlas-mime.xml DESTINATION share/mime/packages RENAME moeatlas.xml COMPONENT gui)
  install(FILES ${_pkg}/share/copyright ${_gen}/doc/moeatlas-gui/changelog.gz DESTINATION share/doc/moeatlas-gui
          COMPONENT gui)
endif()
add_custom_target(moeatlas_package_docs ALL DEPENDS ${_docs_outputs})

# --- CPack: one .deb per component ---------------------------------------------------------------
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME moeatlas)
set(CPACK_PACKAGE_VENDOR "The MoE Atlas authors")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_DIRECTORY ${PROJECT_BINARY_DIR}/packages)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL cli)
if(MOEATLAS_BUILD_GUI)
  list(APPEND CPACK_COMPONENTS_ALL gui)
endif()
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION science)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_DEBIAN_CLI_PACKAGE_NAME moeatlas)
set(CPACK_DEBIAN_GUI_PACKAGE_NAME moeatlas-gui)
set(CPACK_DEBIAN_CLI_PACKAGE_SECTION science)
set(CPACK_DEBIAN_GUI_PACKAGE_SECTION science)
# LibTorch's BLAS is whichever libblas.so.3 is selected; OpenBLAS is ~9x faster than the reference one.
set(CPACK_DEBIAN_CLI_PACKAGE_RECOMMENDS "libopenblas0-pthread")
set(CPACK_DEBIAN_GUI_PACKAGE_DEPENDS "moeatlas (= ${PROJECT_VERSION})")
set(CPACK_COMPONENT_CLI_DESCRIPTION "analyse and compress Mixture-of-Experts LLMs (command line)
moeatlas runs a Hugging Face Mixture-of-Experts checkpoint over domain-labelled
calibration text and records every routing decision into an HDF5 atlas, from
which expert importance scores, pruning plans, evaluations and pruned
checkpoints follow. Includes a small demo model and its data in
/usr/share/moeatlas/demo.")
set(CPACK_COMPONENT_GUI_DESCRIPTION "analyse and compress Mixture-of-Experts LLMs (workbench)
moeatlas-gui is the Qt workbench of MoE Atlas: expert heatmaps per layer and
domain, scores, pruning budgets and plans, trade-off charts, routing rules,
Fisher importance and expert prefetching, on atlases written by moeatlas.")
include(CPack)
