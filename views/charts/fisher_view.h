// The "Fisher" tab: what `moeatlas fisher` stored in the atlas (Fisher-MoE, METHODS.md section 4).
// Concentration of the Fisher mass (share held by the top 0.001%..1% of units, log x axis, one
// curve per domain and pooled, per layer or all layers), the top-n unit ablation (loss against
// units removed per ranking, with its table) and the sorted unit scores of one expert.
#pragma once

#include <QString>
#include <QStringList>
#include <QWidget>

#include <memory>
#include <vector>

class QAbstractSeries;
class QChart;
class QChartView;
class QComboBox;
class QLabel;
class QLogValueAxis;
class QSpinBox;
class QTableView;
class QValueAxis;

namespace moeatlas {
struct FisherTable;
}

namespace moeatlas::views {

struct AtlasSnapshot;
class FisherAblationModel;

class FisherView : public QWidget {
    Q_OBJECT
public:
    explicit FisherView(QWidget* parent = nullptr);
    ~FisherView() override;

    // A new atlas (null: nothing open). Keeps the form and layers shown when the new one has them.
    void setSnapshot(std::shared_ptr<const AtlasSnapshot> snapshot);
    bool hasFisher() const;
    QString noteText() const; // why the tab is empty, or an error of its data

    QStringList forms() const; // stored forms (mask, weight, grad_abs, activation, magnitude)
    QString form() const;
    int layerIndex() const; // concentration: index into the Fisher layers, -1 = all layers
    int ablationDomain() const; // index into the ablation's evaluated domains
    int profileLayer() const; // index into the Fisher layers
    int profileExpert() const;
    // True while the unit scores of the profile's form are being read.
    bool isProfileLoading() const { return m_profileJob != 0; }

    // Charts and the ablation table, for tests and screenshots. Concentration series are named
    // after the rows ("math", ..., "pooled"; "magnitude") plus "uniform" (share = fraction);
    // ablation series after the rankings ("pooled", "<domain>'s own", "random") plus "full model";
    // profile series after the rows (positive scores only: the y axis is logarithmic).
    QChart* concentrationChart() const { return m_concChart; }
    QChart* ablationChart() const { return m_ablChart; }
    QChart* profileChart() const { return m_profChart; }
    FisherAblationModel* ablationModel() const { return m_ablModel; }
    QAbstractSeries* seriesNamed(QChart* chart, const QString& name) const;

    // .svg (vector) or .png (raster) of the whole tab.
    bool saveImage(const QString& path);

public Q_SLOTS:
    void setForm(const QString& form);
    void setLayerIndex(int index);
    void setAblationDomain(int index);
    // The expert whose unit scores the profile shows (row = index into the Fisher layers, e.g. a
    // heatmap row: the Fisher layers are the atlas's MoE layers).
    void setProfileExpert(int layerIndex, int expert);

Q_SIGNALS:
    void profileReady();

private:
    void rebuildConcentration();
    void rebuildAblation();
    void rebuildProfile();
    void showProfile(const FisherTable& table);

    std::shared_ptr<const AtlasSnapshot> m_snapshot;
    quint64 m_profileJob = 0; // the unit-score read in flight (0 = none)
    quint64 m_jobs = 0;

    QComboBox* m_formBox;
    QComboBox* m_layerBox;
    QComboBox* m_domainBox;
    QComboBox* m_profileLayerBox;
    QSpinBox* m_expertBox;
    QLabel* m_note;
    QChart* m_concChart;
    QLogValueAxis* m_concX;
    QValueAxis* m_concY;
    QChart* m_ablChart;
    QLogValueAxis* m_ablX;
    QValueAxis* m_ablY;
    QChart* m_profChart;
    QValueAxis* m_profX;
    QLogValueAxis* m_profY;
    QTableView* m_ablTable;
    FisherAblationModel* m_ablModel;
};

} // namespace moeatlas::views
